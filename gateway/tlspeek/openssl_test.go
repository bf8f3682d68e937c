package tlspeek

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/storegate/storegate/gateway/events"
)

// tool finds a program the tests drive; `make test-deps` installs them.
func tool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: run `make test-deps` (build/test-deps.sh) first", name)
	}
	return path
}

// runTool runs a client program against the relay with stdin closed, so it
// finishes the handshake, sees EOF and closes.
func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool(t, name), args...)
	cmd.Stdin = strings.NewReader("")
	out, _ := cmd.CombinedOutput() // refusals make it fail; the relay's decision is what counts
	if ctx.Err() != nil {
		t.Fatalf("%s did not finish: %s", name, out)
	}
	return string(out)
}

func TestOpenSSLClient(t *testing.T) {
	p := newPKI(t)
	ca, cert, key := p.files(t)
	allowed := mustSubjects(t, "C = SE, O = Contoso, CN = pos-0001") // as openssl prints it
	cases := []struct {
		name       string
		version    string
		withCert   bool
		wantVer    uint16
		wantReason string
		wantEvent  events.ID
		wantCert   bool
		observable bool
	}{
		{name: "tls1.2 with -cert", version: "-tls1_2", withCert: true, wantVer: VersionTLS12,
			wantReason: ReasonOK, wantEvent: events.TLSVerified, wantCert: true, observable: true},
		{name: "tls1.2 without -cert", version: "-tls1_2", wantVer: VersionTLS12,
			wantReason: ReasonNoClientCert, wantEvent: events.NotAllowed, observable: true},
		{name: "tls1.3 with -cert", version: "-tls1_3", withCert: true, wantVer: VersionTLS13,
			wantReason: ReasonCertNotObservable, wantEvent: events.NotAllowed},
		{name: "tls1.3 without -cert", version: "-tls1_3", wantVer: VersionTLS13,
			wantReason: ReasonCertNotObservable, wantEvent: events.NotAllowed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := startTLSServer(t, serverConfig(p, tls.RequestClientCert))
			rl := startRelay(t, srv.ln.Addr().String(), relayOpts{cfg: Config{NeedClientCert: true},
				rules: Rules{Host: p.serverName, AllowedSubjects: allowed}})
			args := []string{"s_client", "-connect", rl.addr(), "-servername", p.serverName, "-CAfile", ca, tc.version}
			if tc.withCert {
				args = append(args, "-cert", cert, "-key", key)
			}
			out := runTool(t, "openssl", args...)
			o := rl.next(t)
			sc := srv.next(t)
			if o.err != nil {
				t.Fatalf("Inspect: %v\n%s", o.err, out)
			}
			r, d := o.res, o.decision
			if r.Version != tc.wantVer || r.SNI != p.serverName || d.Reason != tc.wantReason || d.Event != tc.wantEvent {
				t.Fatalf("result %+v decision %+v\n%s", r, d, out)
			}
			if (r.ClientCert != nil) != tc.wantCert || r.CertObservable != tc.observable {
				t.Fatalf("cert %+v observable %v", r.ClientCert, r.CertObservable)
			}
			if tc.wantCert && r.ClientCert.Subject != p.clientDN {
				t.Errorf("subject %q", r.ClientCert.Subject)
			}
			inspected := o.clientIn.readBytes()
			if got := sc.tap.readBytes(); !bytes.HasPrefix(got, inspected) {
				t.Errorf("upstream did not receive the inspected %d bytes unchanged", len(inspected))
			}
		})
	}
}

// curl pinned to TLS 1.2 with a client certificate; the server answers
// "hello" and closes, which curl takes as an HTTP/0.9 response.
func TestCurlClient(t *testing.T) {
	p := newPKI(t)
	ca, cert, key := p.files(t)
	srv := startTLSServerOpts(t, serverConfig(p, tls.RequireAndVerifyClientCert), true)
	rl := startRelay(t, srv.ln.Addr().String(), relayOpts{cfg: Config{NeedClientCert: true},
		rules: Rules{Host: p.serverName, AllowedSubjects: mustSubjects(t, "/C=SE/O=Contoso/CN=pos-0001")}})
	port := strconv.Itoa(rl.ln.Addr().(*net.TCPAddr).Port)
	out := runTool(t, "curl", "-sS", "--http0.9", "--max-time", "20", "--tls-max", "1.2",
		"--cacert", ca, "--cert", cert, "--key", key,
		"--resolve", p.serverName+":"+port+":127.0.0.1", "https://"+p.serverName+":"+port+"/")
	o := rl.next(t)
	srv.next(t)
	if o.err != nil || !o.decision.OK || o.res.Version != VersionTLS12 || o.res.ClientCert == nil {
		t.Fatalf("inspect %v decision %+v result %+v\n%s", o.err, o.decision, o.res, out)
	}
	if o.res.ClientCert.Subject != p.clientDN || o.res.SNI != p.serverName {
		t.Fatalf("result %+v", o.res)
	}
}
