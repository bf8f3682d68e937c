package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// maxStatusBytes bounds a JSON document a client will read.
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
	var st Status
	err := GetJSON(ctx, client, url, &st)
	var re *ReachError
	var je *JSONError
	switch {
	case errors.As(err, &re):
		return Status{}, fmt.Errorf("cannot reach the gateway's admin endpoint at %s (is storegate running? is admin_address set?): %v", addr, re.Err)
	case errors.As(err, &je):
		return Status{}, fmt.Errorf("%s did not answer with a storegate status: %v", url, je.Err)
	case err != nil:
		return Status{}, err
	}
	if st.Version == "" && st.Listen == "" {
		return Status{}, fmt.Errorf("%s did not answer with a storegate status (no version, no listen address)", url)
	}
	return st, nil
}

// GetJSON reads GET url into v: a 200 answer of at most 1 MiB of JSON.
// A request that got no answer is a *ReachError, an answer that is not JSON
// for v a *JSONError; other errors name the URL and what it answered.
func GetJSON(ctx context.Context, client *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("bad address %q: %v", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return &ReachError{Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxStatusBytes+1))
	if err != nil {
		return fmt.Errorf("reading %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	if len(body) > maxStatusBytes {
		return fmt.Errorf("%s: answer larger than %d bytes", url, maxStatusBytes)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return &JSONError{URL: url, Err: err}
	}
	return nil
}

// ReachError is a request that got no answer (refused, timed out, reset).
type ReachError struct{ Err error }

func (e *ReachError) Error() string { return e.Err.Error() }
func (e *ReachError) Unwrap() error { return e.Err }

// JSONError is an answer that did not decode.
type JSONError struct {
	URL string
	Err error
}

func (e *JSONError) Error() string { return e.URL + " did not answer with JSON: " + e.Err.Error() }
func (e *JSONError) Unwrap() error { return e.Err }
