package console

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// maxStatusBytes bounds the /status document a client will read.
const maxStatusBytes = 1 << 20

// FetchStatus reads GET http://addr/status from a running gateway's admin
// endpoint. Errors say what to check.
func FetchStatus(ctx context.Context, client *http.Client, addr string) (Status, error) {
	if addr == "" || addr == "off" {
		return Status{}, fmt.Errorf("the admin endpoint is off (admin_address); nothing to ask")
	}
	url := "http://" + addr + "/status"
	if strings.Contains(addr, "://") {
		url = strings.TrimSuffix(addr, "/") + "/status"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Status{}, fmt.Errorf("bad admin address %q: %v", addr, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return Status{}, fmt.Errorf("cannot reach the gateway's admin endpoint at %s (is storegate running? is admin_address set?): %v", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxStatusBytes+1))
	if err != nil {
		return Status{}, fmt.Errorf("reading %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return Status{}, fmt.Errorf("%s answered %s", url, resp.Status)
	}
	if len(body) > maxStatusBytes {
		return Status{}, fmt.Errorf("%s: answer larger than %d bytes", url, maxStatusBytes)
	}
	var st Status
	if err := json.Unmarshal(body, &st); err != nil {
		return Status{}, fmt.Errorf("%s did not answer with a storegate status: %v", url, err)
	}
	if st.Version == "" && st.Listen == "" {
		return Status{}, fmt.Errorf("%s did not answer with a storegate status (no version, no listen address)", url)
	}
	return st, nil
}
