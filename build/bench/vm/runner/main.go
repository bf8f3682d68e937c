// Command runner boots the benchmark guest under qemu (KVM when /dev/kvm can
// be opened, else TCG) and writes the JSON lines and table it sends back:
//
//	runner -kernel VMLINUZ -init INIT -storegate BIN -bench BIN -out F.jsonl -- HARNESS FLAGS
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/storegate/storegate/build/bench/vm"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	kernel, init, storegate, bench string
	out, qemu, accel, cpu          string
	mem, smp                       int
	timeout                        time.Duration
	benchArgs                      []string
}

func parse(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("runner", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.kernel, "kernel", "", "the guest kernel (bzImage), e.g. Debian's vmlinuz")
	fs.StringVar(&o.init, "init", "", "the guest's init, static (go build ./build/bench/vm/init)")
	fs.StringVar(&o.storegate, "storegate", "", "storegate, static")
	fs.StringVar(&o.bench, "bench", "", "the harness, static (go build ./build/bench)")
	fs.StringVar(&o.out, "out", "", "JSON-lines file for the results; the table goes beside it as .txt")
	fs.StringVar(&o.qemu, "qemu", "qemu-system-x86_64", "qemu binary")
	fs.StringVar(&o.accel, "accel", "auto", "kvm, tcg, or auto: kvm when /dev/kvm opens read-write")
	fs.StringVar(&o.cpu, "cpu", "", "qemu -cpu model; default: the host's under KVM (without arch-capabilities, which nested KVM may refuse), max under TCG")
	fs.IntVar(&o.mem, "mem", 2048, "guest memory, MiB")
	fs.IntVar(&o.smp, "smp", 2, "guest CPUs")
	fs.DurationVar(&o.timeout, "timeout", 20*time.Minute, "bound on the whole guest run under KVM (TCG gets 4 times this)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.benchArgs = fs.Args()
	for name, v := range map[string]string{"kernel": o.kernel, "init": o.init, "storegate": o.storegate, "bench": o.bench, "out": o.out} {
		if v == "" {
			return o, fmt.Errorf("-%s is required", name)
		}
	}
	if o.accel != "auto" && o.accel != "kvm" && o.accel != "tcg" {
		return o, fmt.Errorf("-accel %q: want kvm, tcg or auto", o.accel)
	}
	if o.mem < 256 || o.smp < 1 || o.timeout < 2*time.Minute {
		return o, errors.New("-mem at least 256, -smp at least 1, -timeout at least 2m")
	}
	return o, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parse(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "runner:", err)
		return 2
	}
	words, err := vm.Cmdline(o.benchArgs)
	if err != nil {
		fmt.Fprintln(stderr, "runner:", err)
		return 2
	}
	tmp, err := os.MkdirTemp("", "storegate-bench-vm-")
	if err != nil {
		fmt.Fprintln(stderr, "runner:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	initrd := filepath.Join(tmp, "initrd.gz")
	if err := pack(initrd, o); err != nil {
		fmt.Fprintln(stderr, "runner: initramfs:", err)
		return 1
	}
	var code int
	for i, accel := range accels(o.accel, stderr) {
		// Under KVM, a kernel that cannot run there hangs silently: give it
		// a bounded time to reach init before falling back to TCG.
		probe := time.Duration(0)
		if o.accel == "auto" && accel == "kvm" {
			probe = 90 * time.Second
		}
		var booted bool
		code, booted = guest(o, accel, initrd, words, probe, stdout, stderr)
		if booted || probe == 0 {
			return code
		}
		fmt.Fprintf(stderr, "runner: the guest did not reach init under KVM within %s: trying TCG (try %d)\n", probe, i+2)
	}
	return code
}

// accels lists the accelerators to try in order for -accel.
func accels(accel string, stderr io.Writer) []string {
	if accel != "auto" {
		return []string{accel}
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		fmt.Fprintf(stderr, "runner: no usable /dev/kvm (%v): running under TCG, slowly, with a longer bound\n", err)
		return []string{"tcg"}
	}
	f.Close()
	// PVM (kvm_pvm, KVM without hardware virtualisation, as in some cloud
	// sandboxes) runs only kernels built as PVM guests; Debian's hangs.
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		fmt.Fprintln(stderr, "runner: /dev/kvm is PVM (module kvm_pvm), which boots only kernels built as PVM guests,"+
			" not Debian's: running under TCG, slowly, with a longer bound")
		return []string{"tcg"}
	}
	return []string{"kvm", "tcg"}
}

// guest boots the guest once under accel and writes its results. It
// returns the exit code and whether the guest's init started; with probe
// > 0 it gives up when init has not spoken by then.
func guest(o options, accel, initrd, words string, probe time.Duration, stdout, stderr io.Writer) (int, bool) {
	bound := o.timeout
	cpu := "host,-arch-capabilities"
	if accel == "tcg" {
		bound, cpu = 4*o.timeout, "max"
	}
	if o.cpu != "" {
		cpu = o.cpu
	}
	// The guest bounds the harness itself a minute early, so a stuck run
	// still sends what it has and powers off before qemu is killed.
	cmdline := fmt.Sprintf("console=ttyS0 quiet panic=-1 %s=%s -- %s", vm.TimeoutVar, bound-time.Minute, words)
	qargs := []string{
		"-accel", accel, "-cpu", cpu, "-m", fmt.Sprint(o.mem), "-smp", fmt.Sprint(o.smp),
		"-nographic", "-no-reboot", "-nic", "none",
		"-kernel", o.kernel, "-initrd", initrd, "-append", cmdline,
	}
	fmt.Fprintf(stderr, "runner: %s %s\n", o.qemu, strings.Join(qargs, " "))
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	cmd := exec.CommandContext(ctx, o.qemu, qargs...)
	cmd.Stderr = stderr
	cmd.WaitDelay = 5 * time.Second
	console, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(stderr, "runner:", err)
		return 1, true
	}
	began := time.Now()
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(stderr, "runner: qemu:", err)
		return 1, true
	}
	echo := &initWatch{w: stdout, spoke: make(chan struct{})}
	probeDone := make(chan struct{})
	defer close(probeDone)
	if probe > 0 {
		go func() {
			select {
			case <-echo.spoke:
			case <-probeDone:
			case <-time.After(probe):
				cancel()
			}
		}()
	}
	res, readErr := vm.Extract(console, echo)
	waitErr := cmd.Wait()
	took := time.Since(began).Round(time.Second)
	if !echo.seen {
		if probe > 0 {
			return 1, false
		}
	}
	if ctx.Err() != nil {
		fmt.Fprintf(stderr, "runner: the guest ran past %s and was killed\n", bound)
	} else if waitErr != nil {
		fmt.Fprintln(stderr, "runner: qemu:", waitErr)
	}
	if readErr != nil {
		fmt.Fprintln(stderr, "runner: console:", readErr)
	}
	if len(res.JSON) > 0 {
		if err := writeLines(o.out, res.JSON); err != nil {
			fmt.Fprintln(stderr, "runner:", err)
			return 1, true
		}
		txt := strings.TrimSuffix(o.out, ".jsonl") + ".txt"
		if err := writeLines(txt, res.Text); err != nil {
			fmt.Fprintln(stderr, "runner:", err)
			return 1, true
		}
		fmt.Fprintf(stdout, "guest (%s) ran %s; JSON lines: %s, table: %s\n", accel, took, o.out, txt)
	}
	if err := res.Complete(); err != nil {
		fmt.Fprintln(stderr, "runner:", err)
		return 1, true
	}
	if ctx.Err() != nil || waitErr != nil || readErr != nil {
		return 1, true
	}
	return 0, true
}

// initWatch passes console lines on and notes the first from the guest's
// init (Extract writes whole lines, one per Write, from one goroutine).
type initWatch struct {
	w     io.Writer
	seen  bool
	spoke chan struct{}
}

func (iw *initWatch) Write(p []byte) (int, error) {
	if !iw.seen && bytes.Contains(p, []byte(vm.InitSays)) {
		iw.seen = true
		close(iw.spoke)
	}
	return iw.w.Write(p)
}

// pack writes the guest's initramfs.
func pack(path string, o options) error {
	var bins [3][]byte
	for i, p := range []string{o.init, o.storegate, o.bench} {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		bins[i] = b
	}
	a, err := vm.Initramfs(bins[0], bins[1], bins[2])
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := a.WriteGzip(&buf); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

func writeLines(path string, lines []string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}
