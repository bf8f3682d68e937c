package initd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/storegate/storegate/firmware/kmod"
	"github.com/storegate/storegate/internal/durable"
)

// Action is how the box ends: reboot or power off.
type Action int

// The ways Run ends.
const (
	Reboot Action = iota
	PowerOff
)

func (a Action) String() string {
	if a == PowerOff {
		return "power off"
	}
	return "reboot"
}

type runner struct {
	cfg Config
	mu  sync.Mutex // serialises log lines
}

func (r *runner) logf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.cfg.Log, "storegate-init: "+format+"\n", args...)
}

// Run does everything PID 1 does and returns how the box must end: on a
// signal (SIGTERM/SIGINT reboot, SIGUSR2/SIGPWR power off), the power
// button, or a fatal error (reboot). The caller then calls Halt.
func Run(cfg Config) Action {
	r := &runner{cfg: cfg}
	if err := r.mountKernelFS(); err != nil {
		r.logf("mount: %v", err)
	}
	if b, err := os.ReadFile("/proc/cmdline"); err == nil {
		r.cfg.ApplyCmdline(string(b))
	}
	// Ctrl-Alt-Del and the power button become signals we handle cleanly.
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGUSR2, unix.SIGPWR)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	r.loadModules()
	power := make(chan Action, 1)
	go r.watchPowerButton(ctx, power)

	fatal := make(chan error, 1)
	if err := r.mountStorage(); err != nil {
		r.logf("fatal: %v", err)
		return r.waitThen(sigs, power, 30*time.Second, Reboot)
	}
	policy := filepath.Join(r.cfg.FATMount, "policy.yaml")
	go r.netUp(ctx, r.readPolicyNetwork(policy))
	if r.cfg.Debug {
		go r.debugShell(ctx)
	}
	gw := &gateway{r: r, policy: policy}
	sup := &Supervisor{Run: gw.run, Logf: r.logf}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := sup.Supervise(ctx); err != nil {
			fatal <- err
		}
	}()
	go r.reportMemory(ctx, 5*time.Second)

	var act Action
	select {
	case s := <-sigs:
		act = Reboot
		if s == unix.SIGUSR2 || s == unix.SIGPWR {
			act = PowerOff
		}
		r.logf("%v: %v requested", s, act)
	case act = <-power:
		r.logf("power button: %v", act)
	case err := <-fatal:
		r.logf("fatal: %v", err)
		act = Reboot
	}
	cancel()
	wg.Wait() // the gateway has been stopped (SIGTERM, then SIGKILL after a grace)
	r.logf("memory in use at shutdown: %s", memoryLine())
	gw.closeLog()
	r.unmount()
	return act
}

// waitThen waits for a signal or d, then returns def.
func (r *runner) waitThen(sigs chan os.Signal, power chan Action, d time.Duration, def Action) Action {
	r.logf("%v in %s", def, d)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case s := <-sigs:
		if s == unix.SIGUSR2 || s == unix.SIGPWR {
			return PowerOff
		}
	case a := <-power:
		return a
	case <-t.C:
	}
	r.unmount()
	return def
}

// Halt syncs and reboots or powers off; it does not return.
func Halt(a Action) {
	unix.Sync()
	cmd := unix.LINUX_REBOOT_CMD_RESTART
	if a == PowerOff {
		cmd = unix.LINUX_REBOOT_CMD_POWER_OFF
	}
	for {
		_ = unix.Reboot(cmd)
		time.Sleep(time.Second)
	}
}

func (r *runner) mountKernelFS() error {
	var errs []error
	for _, m := range []struct {
		src, dst, fs string
		flags        uintptr
		data         string
	}{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755,size=16m"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777,size=16m"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := unix.Mount(m.src, m.dst, m.fs, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			errs = append(errs, fmt.Errorf("%s on %s: %w", m.fs, m.dst, err))
		}
	}
	return errors.Join(errs...)
}

func (r *runner) loadModules() {
	t := time.Now()
	res, missing, err := kmod.Loader{Dir: r.cfg.ModulesDir}.Load(r.cfg.Modules...)
	if err != nil {
		r.logf("modules: %v", err)
		return
	}
	failed := 0
	for _, m := range res {
		// ENODEV and friends are normal: the hardware is not in this box.
		if m.Err != nil && !errors.Is(m.Err, unix.ENODEV) && !errors.Is(m.Err, unix.ENXIO) && !errors.Is(m.Err, unix.ENOENT) {
			failed++
			r.logf("module %s: %v", kmod.Name(m.File), m.Err)
		}
	}
	r.logf("modules: %d loaded in %s (%d failed; built in or absent: %s)", len(res)-failed, time.Since(t).Round(time.Millisecond), failed, strings.Join(missing, " "))
}

// mountStorage mounts the STOREGATE FAT partition read-write and the data
// partition, creating or repairing the data file system.
func (r *runner) mountStorage() error {
	var fat string
	deadline := time.Now().Add(r.cfg.DeviceWait)
	for {
		var err error
		fat, err = FindPartition("/sys/class/block", r.cfg.FATName)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%v after %s: is this the storegate image?", err, r.cfg.DeviceWait)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := os.MkdirAll(r.cfg.FATMount, 0o755); err != nil {
		return err
	}
	opts := "iocharset=utf8,codepage=437,shortname=mixed,umask=0077,errors=remount-ro,flush"
	if err := unix.Mount(fat, r.cfg.FATMount, "vfat", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts); err != nil {
		return fmt.Errorf("mount %s (STOREGATE) on %s: %w", fat, r.cfg.FATMount, err)
	}
	r.logf("STOREGATE partition %s mounted on %s", fat, r.cfg.FATMount)
	policy := filepath.Join(r.cfg.FATMount, "policy.yaml")
	if _, err := os.Stat(policy); errors.Is(err, os.ErrNotExist) {
		if err := copyFile(r.cfg.DefaultPolicy, policy); err != nil {
			r.logf("no policy.yaml and the default cannot be written: %v", err)
		} else {
			r.logf("no policy.yaml on STOREGATE: wrote the default one")
		}
	}

	data, err := FindPartition("/sys/class/block", r.cfg.DataName)
	if err != nil {
		r.logf("data partition: %v; the spool lives in memory until reboot", err)
		return os.MkdirAll(r.cfg.DataMount, 0o755)
	}
	if err := r.prepareData(data); err != nil {
		r.logf("data partition %s: %v; the spool lives in memory until reboot", data, err)
		return os.MkdirAll(r.cfg.DataMount, 0o755)
	}
	return nil
}

func (r *runner) prepareData(dev string) error {
	if err := os.MkdirAll(r.cfg.DataMount, 0o755); err != nil {
		return err
	}
	f, err := os.Open(dev)
	if err != nil {
		return err
	}
	has, err := HasExt4(f)
	f.Close()
	if err != nil {
		return err
	}
	mkfs := func(why string) error {
		r.logf("data partition %s: %s: creating an ext4 file system", dev, why)
		out, err := exec.Command(r.cfg.Mke2fs, "-q", "-F", "-t", "ext4", "-L", r.cfg.DataName, "-m", "0", dev).CombinedOutput()
		if err != nil {
			return fmt.Errorf("mke2fs: %v: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	if !has {
		if err := mkfs("first boot (no file system)"); err != nil {
			return err
		}
	} else {
		// -p repairs what is safe to repair; exit 1 and 2 mean it did.
		err := exec.Command(r.cfg.E2fsck, "-p", dev).Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee) && ee.ExitCode() <= 2:
			r.logf("data partition %s: e2fsck repaired it (exit %d)", dev, ee.ExitCode())
		default:
			r.logf("data partition %s: e2fsck -p: %v; trying e2fsck -y", dev, err)
			_ = exec.Command(r.cfg.E2fsck, "-y", dev).Run()
		}
	}
	mount := func() error {
		return unix.Mount(dev, r.cfg.DataMount, "ext4", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC|unix.MS_NOATIME, "")
	}
	if err := mount(); err != nil {
		if err := mkfs(fmt.Sprintf("unusable (%v), the old spool is lost", err)); err != nil {
			return err
		}
		if err := mount(); err != nil {
			return err
		}
	}
	r.logf("data partition %s mounted on %s", dev, r.cfg.DataMount)
	return nil
}

func (r *runner) unmount() {
	unix.Sync()
	for _, m := range []string{r.cfg.DataMount, r.cfg.FATMount} {
		if err := unix.Unmount(m, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			// Busy: remount read-only so the file system is clean on disk.
			if err := unix.Mount("", m, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				r.logf("unmount %s: %v", m, err)
			}
		}
	}
	unix.Sync()
}

// copyFile writes dst durably: a power cut leaves the old file or the whole
// new one, never an empty policy.yaml that would keep the gateway down.
func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	name := filepath.Base(dst)
	return durable.WriteFile(filepath.Dir(dst), name, name+".tmp", b, 0o644)
}

// gateway runs storegate once per call, its events going to a capped log
// file on the data partition (and to the console in a debug build).
type gateway struct {
	r      *runner
	policy string
	once   sync.Once
	log    io.Writer
	file   *RotatingFile // the event log on the data partition, or nil
}

// closeLog closes the event log so the data partition can be unmounted.
func (g *gateway) closeLog() {
	if g.file != nil {
		_ = g.file.Close()
	}
}

func (g *gateway) run(ctx context.Context) error {
	r := g.r
	g.once.Do(func() {
		dir := filepath.Join(r.cfg.DataMount, "log")
		var w io.Writer = io.Discard
		if err := os.MkdirAll(dir, 0o750); err != nil {
			r.logf("event log: %v", err)
		} else {
			g.file = &RotatingFile{Path: filepath.Join(dir, "events.jsonl"), Max: 4 << 20}
			w = g.file
		}
		if r.cfg.Debug {
			w = io.MultiWriter(w, r.cfg.Log)
		}
		g.log = w
	})
	args := []string{"run", "--policy", g.policy}
	// The policy's console.device (a USB-serial adapter, say) wins; else
	// the console runs on the image's serial port.
	b, err := os.ReadFile(g.policy)
	if (err != nil || ConsoleDevice(b) == "") && r.cfg.Console != "" {
		args = append(args, "--console", r.cfg.Console)
	}
	wait := StopWait(b)
	cmd := exec.Command(r.cfg.Gateway, args...)
	cmd.Env = []string{"PATH=/bin:/sbin", "HOME=/", "STOREGATE_POLICY=" + g.policy, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}
	cmd.Stdout, cmd.Stderr = g.log, g.log
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		return err
	}
	r.logf("gateway started (pid %d) %s after kernel start: %s %s", cmd.Process.Pid, uptime(), r.cfg.Gateway, strings.Join(args, " "))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	_ = cmd.Process.Signal(unix.SIGTERM)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case err := <-done:
		r.logf("gateway stopped: %v", err)
		return err
	case <-t.C:
		_ = cmd.Process.Kill()
		r.logf("gateway did not stop within %s: killed", wait)
		return <-done
	}
}

// debugShell keeps a shell on the debug TTY when the image has one.
func (r *runner) debugShell(ctx context.Context) {
	if _, err := os.Stat(r.cfg.DebugShell); err != nil {
		r.logf("debug: no shell in this image")
		return
	}
	for i := 0; i < 1000 && ctx.Err() == nil; i++ {
		tty, err := os.OpenFile(r.cfg.DebugShellTTY, os.O_RDWR, 0)
		if err != nil {
			r.logf("debug shell: %v", err)
			return
		}
		cmd := exec.CommandContext(ctx, r.cfg.DebugShell)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
		cmd.Env = []string{"PATH=/bin:/sbin", "HOME=/", "STOREGATE_POLICY=" + filepath.Join(r.cfg.FATMount, "policy.yaml")}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
		r.logf("debug: shell on %s", r.cfg.DebugShellTTY)
		_ = cmd.Run()
		tty.Close()
		sleepCtx(ctx, time.Second)
	}
}

func (r *runner) reportMemory(ctx context.Context, after time.Duration) {
	if sleepCtx(ctx, after) {
		r.logf("memory in use: %s", memoryLine())
	}
}
