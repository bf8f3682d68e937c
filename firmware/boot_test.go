package firmware

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// qemuGuestHost is how a guest on QEMU's user-mode network reaches the
// host's loopback: connections to it are made by QEMU to 127.0.0.1.
const qemuGuestHost = "10.0.2.2"

// arches maps an image architecture to its QEMU and UEFI firmware.
var arches = map[string]struct {
	qemu, machine, code, vars, cpu string
}{
	"amd64": {"qemu-system-x86_64", "q35", "/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd", "max"},
	"arm64": {"qemu-system-aarch64", "virt", "/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd", "max"},
}

// TestBootImage boots the firmware image named by STOREGATE_FIRMWARE_IMAGE
// (make firmware-test sets it) with UEFI firmware and no -kernel: the disk
// boots the way a store box's firmware boots it.
func TestBootImage(t *testing.T) {
	img := os.Getenv("STOREGATE_FIRMWARE_IMAGE")
	if img == "" {
		t.Skip("STOREGATE_FIRMWARE_IMAGE is not set: run `make firmware-test`")
	}
	arch := os.Getenv("STOREGATE_FIRMWARE_ARCH")
	if arch == "" {
		arch = "amd64"
	}
	q, ok := arches[arch]
	if !ok {
		t.Fatalf("unknown architecture %q", arch)
	}
	accel := os.Getenv("STOREGATE_QEMU_ACCEL")
	if accel == "" {
		accel = "tcg" // software emulation, as the box's CPU is not the host's
	}
	bootLimit := 5 * time.Minute
	if arch != "amd64" {
		bootLimit = 10 * time.Minute
	}
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if out, err := exec.Command("cp", "--sparse=always", img, disk).CombinedOutput(); err != nil {
		t.Fatalf("copy image: %v %s", err, out)
	}
	vars := filepath.Join(dir, "vars.fd")
	if out, err := exec.Command("cp", q.vars, vars).CombinedOutput(); err != nil {
		t.Fatalf("UEFI variables: %v %s", err, out)
	}

	// The allowed upstream: HTTPS on the host's loopback, with a certificate
	// for the address the guest dials.
	upstream, pool := startUpstream(t)
	upPort := upstream.Addr().(*net.TCPAddr).Port

	// Drop the policy onto the STOREGATE partition with mtools, as an
	// integrator does with the card in a laptop.
	policy := fmt.Sprintf(`# boot test policy
version: 1
listen_address: 0.0.0.0
listen_port: 8080
admin_address: 127.0.0.1:8081
allowed_hosts: [%s]
allowed_ports: [%d]
presets: []
`, qemuGuestHost, upPort)
	dropPolicy(t, dir, disk, policy)

	fwd := freePort(t)
	v := startVM(t, q.qemu, qemuArgs(arch, q.machine, accel, q.cpu, q.code, vars, disk, fwd), dir, "boot1", bootLimit)
	con, start, exited, monSock := v.con, v.start, v.exited, v.monSock

	// 1. A CONNECT through the forwarded port to the allowed upstream. The
	// gateway may still be bringing up its network: retry until the deadline.
	proxyURL := &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", fwd)}
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		Proxy:           http.ProxyURL(proxyURL),
		TLSClientConfig: &tls.Config{RootCAs: pool},
	}}
	target := fmt.Sprintf("https://%s:%d/hello", qemuGuestHost, upPort)
	var serving time.Duration
	var lastErr error
	for deadline := start.Add(bootLimit); time.Now().Before(deadline); {
		resp, err := client.Get(target)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && string(body) == "hello from the host\n" {
				serving = time.Since(start)
				break
			}
			err = fmt.Errorf("status %d body %q", resp.StatusCode, body)
		}
		lastErr = err
		time.Sleep(time.Second)
	}
	if serving == 0 {
		t.Fatalf("no tunnel to the allowed upstream: %v", lastErr)
	}

	// 2. A refused destination (a port the policy does not allow) gets 403.
	if code := rawConnect(t, proxyURL.Host, fmt.Sprintf("%s:%d", qemuGuestHost, upPort+1)); code != 403 {
		t.Errorf("CONNECT to a refused port: status %d, want 403", code)
	}

	// 3. The banner and the prompt on the serial console, then status. The
	// console is checked after the proxy so that both are reported.
	if _, err := con.waitFor("serial console", time.Minute); err != nil {
		t.Errorf("no console banner: %v", err)
	} else if _, err := con.waitFor("storegate> ", 30*time.Second); err != nil {
		t.Errorf("no prompt: %v", err)
	} else {
		mark := con.mark()
		con.send("status\r")
		out, err := con.waitForAfter(mark, "storegate> ", 30*time.Second)
		if err != nil {
			t.Errorf("status: %v", err)
		}
		for _, want := range []string{"listen", "0.0.0.0:8080", "/storegate/policy.yaml"} {
			if !strings.Contains(out, want) {
				t.Errorf("status output lacks %q:\n%s", want, out)
			}
		}
	}

	// Init reports memory a few seconds after starting the gateway.
	memText, _ := con.waitFor(" KiB (MemTotal - MemAvailable)", time.Minute)
	mem := regexp.MustCompile(`memory in use: (\d+) KiB of (\d+) KiB`).FindStringSubmatch(memText)

	// 4. Power off through the power button (ACPI), which init turns into a
	// clean shutdown; QEMU exits when the guest powers off.
	monitor(t, monSock, "system_powerdown")
	select {
	case <-exited:
	case <-time.After(2 * time.Minute):
		t.Fatal("the guest did not power off within 2 minutes of the power button")
	}
	if _, err := con.waitFor("memory in use at shutdown", 5*time.Second); err != nil {
		t.Errorf("no clean shutdown on the console: %v", err)
	}
	if strings.Contains(con.text(), "Kernel panic") {
		t.Errorf("kernel panic on the console")
	}

	// 5. A second boot of the same disk with a static address in the policy
	// (the one QEMU's forward points at): the data file system made on the
	// first boot is checked (e2fsck -p) and mounted, not made again, and the
	// gateway serves again.
	dropPolicy(t, dir, disk, policy+"network: {dhcp: false, address: 10.0.2.15/24, gateway: 10.0.2.2, dns: [10.0.2.3]}\n")
	v2 := startVM(t, q.qemu, qemuArgs(arch, q.machine, accel, q.cpu, q.code, vars, disk, fwd), dir, "boot2", bootLimit)
	if _, err := v2.con.waitFor(" dns [", bootLimit); err != nil {
		t.Errorf("second boot: %v", err)
	} else {
		out := v2.con.text()
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "network: eth0") || strings.Contains(line, "data partition") {
				t.Logf("second boot: %s", strings.TrimSpace(line))
			}
		}
		if !strings.Contains(out, "static 10.0.2.15/24 gateway 10.0.2.2") {
			t.Errorf("second boot did not take the static address from the policy:\n%s", out)
		}
		if strings.Contains(out, "creating an ext4") || strings.Contains(out, "e2fsck -p:") || !strings.Contains(out, "mounted on /var/lib/storegate") {
			t.Errorf("second boot did not reuse a clean data file system:\n%s", out)
		}
	}
	var again error
	for deadline := time.Now().Add(bootLimit); time.Now().Before(deadline); time.Sleep(time.Second) {
		var resp *http.Response
		if resp, again = client.Get(target); again == nil {
			resp.Body.Close()
			break
		}
	}
	if again != nil {
		t.Errorf("second boot: no tunnel: %v", again)
	}
	monitor(t, v2.monSock, "system_powerdown")
	select {
	case <-v2.exited:
	case <-time.After(2 * time.Minute):
		t.Error("second boot: no power off within 2 minutes")
	}

	alloc := allocated(t, img)
	t.Logf("image %s: %d bytes (%d allocated on disk)", filepath.Base(img), st.Size(), alloc)
	t.Logf("boot to serving (QEMU start to first tunnel, %s, UEFI included): %s", accel, serving.Round(10*time.Millisecond))
	if len(mem) == 3 {
		t.Logf("guest memory in use after start: %s KiB of %s KiB", mem[1], mem[2])
	} else {
		t.Errorf("init printed no memory line")
	}
	fmt.Printf("firmware-test: arch=%s accel=%s image_bytes=%d boot_to_serving=%s guest_mem_used_kib=%s guest_mem_total_kib=%s\n",
		arch, accel, st.Size(), serving.Round(10*time.Millisecond), at(mem, 1), at(mem, 2))
}

func qemuArgs(arch, machine, accel, cpu, code, vars, disk string, fwd int) []string {
	args := []string{
		"-machine", machine + ",accel=" + accel, "-cpu", cpu, "-m", "256", "-smp", "1",
		"-nographic", "-no-reboot", "-nodefaults",
		"-drive", "if=pflash,format=raw,readonly=on,file=" + code,
		"-drive", "if=pflash,format=raw,file=" + vars,
		"-drive", "if=none,id=d0,format=raw,file=" + disk,
		"-device", "virtio-blk-pci,drive=d0,bootindex=0",
		"-netdev", fmt.Sprintf("user,id=n0,hostfwd=tcp:127.0.0.1:%d-:8080", fwd),
		"-device", "virtio-net-pci,netdev=n0,romfile=",
	}
	if arch == "amd64" {
		args = append(args, "-vga", "none")
	}
	return args
}

// vm is one run of QEMU with its serial console and monitor.
type vm struct {
	con     *console
	start   time.Time
	exited  chan struct{}
	monSock string
}

// startVM starts QEMU with the serial port and monitor on sockets in dir
// named after name; QEMU is killed at the end of the test at the latest.
func startVM(t *testing.T, qemu string, args []string, dir, name string, limit time.Duration) *vm {
	t.Helper()
	serialSock := filepath.Join(dir, name+"-serial.sock")
	v := &vm{monSock: filepath.Join(dir, name+"-monitor.sock"), exited: make(chan struct{})}
	args = append(args,
		"-chardev", "socket,id=s0,path="+serialSock+",server=on,wait=on",
		"-serial", "chardev:s0",
		"-monitor", "unix:"+v.monSock+",server=on,wait=off")
	ctx, cancel := context.WithTimeout(context.Background(), limit+5*time.Minute)
	cmd := exec.CommandContext(ctx, qemu, args...)
	var qemuOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &qemuOut, &qemuOut
	v.start = time.Now()
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("%s: %v", qemu, err)
	}
	go func() {
		_ = cmd.Wait()
		close(v.exited)
	}()
	// Cleanups run last-registered first: QEMU is stopped before its output
	// is read.
	t.Cleanup(func() {
		if t.Failed() {
			serial := ""
			if v.con != nil {
				serial = v.con.text()
			}
			t.Logf("%s serial output:\n%s\nqemu:\n%s", name, serial, qemuOut.String())
		}
	})
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-v.exited
		cancel()
	})
	// QEMU waits for us on the serial socket (wait=on) so no output is lost.
	v.con = newConsole(dialUnix(t, serialSock, 30*time.Second))
	return v
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return "?"
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// dropPolicy writes policy.yaml onto the image's STOREGATE partition with
// mtools, as an integrator does with the card in a laptop.
func dropPolicy(t *testing.T, dir, disk, policy string) {
	t.Helper()
	p := filepath.Join(dir, "policy.yaml")
	writeFile(t, p, policy)
	off := partitionOffset(t, disk, "STOREGATE")
	mcopy := exec.Command("mcopy", "-o", "-i", fmt.Sprintf("%s@@%d", disk, off), p, "::/policy.yaml")
	mcopy.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	if out, err := mcopy.CombinedOutput(); err != nil {
		t.Fatalf("mcopy: %v %s", err, out)
	}
}

// partitionOffset finds a GPT partition by name with sfdisk's JSON dump.
func partitionOffset(t *testing.T, disk, name string) int64 {
	t.Helper()
	sfdisk := "sfdisk"
	if _, err := exec.LookPath(sfdisk); err != nil {
		sfdisk = "/sbin/sfdisk"
	}
	out, err := exec.Command(sfdisk, "--json", disk).Output()
	if err != nil {
		t.Fatalf("sfdisk --json: %v", err)
	}
	var dump struct {
		PartitionTable struct {
			SectorSize int64 `json:"sectorsize"`
			Partitions []struct {
				Start int64  `json:"start"`
				Name  string `json:"name"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(out, &dump); err != nil {
		t.Fatal(err)
	}
	ss := dump.PartitionTable.SectorSize
	if ss == 0 {
		ss = 512
	}
	for _, p := range dump.PartitionTable.Partitions {
		if p.Name == name {
			return p.Start * ss
		}
	}
	t.Fatalf("no partition %q in %s", name, out)
	return 0
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func dialUnix(t *testing.T, path string, limit time.Duration) net.Conn {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("serial socket: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func monitor(t *testing.T, path, command string) {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("monitor: %v", err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, command+"\n"); err != nil {
		t.Fatalf("monitor: %v", err)
	}
	// Read the echo so the command is taken before we close.
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	for i := 0; i < 50; i++ {
		line, err := r.ReadString('\n')
		if err != nil || strings.Contains(line, command) {
			return
		}
	}
}

func rawConnect(t *testing.T, proxy, target string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxy, 10*time.Second)
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func allocated(t *testing.T, p string) int64 {
	t.Helper()
	out, err := exec.Command("du", "-B1", p).Output()
	if err != nil {
		return -1
	}
	n, _ := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	return n
}

// startUpstream serves HTTPS on 127.0.0.1 with a certificate for the
// address the guest dials, and returns the pool that trusts it.
func startUpstream(t *testing.T) (net.Listener, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "storegate boot test upstream"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.ParseIP(qemuGuestHost), net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello from the host\n")
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go srv.ServeTLS(l, "", "")
	t.Cleanup(func() { srv.Close() })
	return l, pool
}

// console reads the serial line into a buffer that tests wait on.
type console struct {
	c    net.Conn
	mu   sync.Mutex
	buf  bytes.Buffer
	cond chan struct{}
}

func newConsole(c net.Conn) *console {
	con := &console{c: c, cond: make(chan struct{}, 1)}
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := c.Read(b)
			if n > 0 {
				con.mu.Lock()
				con.buf.Write(b[:n])
				con.mu.Unlock()
				select {
				case con.cond <- struct{}{}:
				default:
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return con
}

func (c *console) text() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

func (c *console) mark() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Len()
}

func (c *console) send(s string) {
	_, _ = io.WriteString(c.c, s)
}

func (c *console) waitFor(s string, limit time.Duration) (string, error) {
	return c.waitForAfter(0, s, limit)
}

// waitForAfter waits until s appears after byte offset from and returns the
// text from there to the end of s.
func (c *console) waitForAfter(from int, s string, limit time.Duration) (string, error) {
	deadline := time.Now().Add(limit)
	for {
		txt := c.text()
		if from <= len(txt) {
			if i := strings.Index(txt[from:], s); i >= 0 {
				return txt[from : from+i+len(s)], nil
			}
		}
		left := time.Until(deadline)
		if left <= 0 {
			return "", fmt.Errorf("%q did not appear within %s", s, limit)
		}
		select {
		case <-c.cond:
		case <-time.After(min(left, time.Second)):
		}
	}
}
