package initd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	evKey    = 1
	keyPower = 116
)

// inputEventSize is sizeof(struct input_event): a timeval, then type, code
// and value; the timeval is 16 bytes on 64-bit kernels and 8 on 32-bit ones.
const inputEventSize = int(unsafe.Sizeof(unix.Timeval{})) + 8

// PowerKeyPressed reports whether one input_event record is KEY_POWER down.
func PowerKeyPressed(ev []byte) bool {
	if len(ev) < inputEventSize {
		return false
	}
	off := inputEventSize - 8
	typ := binary.NativeEndian.Uint16(ev[off:])
	code := binary.NativeEndian.Uint16(ev[off+2:])
	val := int32(binary.NativeEndian.Uint32(ev[off+4:]))
	return typ == evKey && code == keyPower && val == 1
}

// watchPowerButton turns a power-button press on any input device (ACPI
// button, gpio-keys) into a clean power off.
func (r *runner) watchPowerButton(ctx context.Context, out chan<- Action) {
	// Input devices appear as their drivers bind: look a few times.
	seen := map[string]bool{}
	for try := 0; try < 20 && ctx.Err() == nil; try++ {
		paths, _ := filepath.Glob("/dev/input/event*")
		for _, p := range paths {
			if seen[p] {
				continue
			}
			f, err := os.Open(p)
			if err != nil {
				continue
			}
			seen[p] = true
			go func() {
				defer f.Close()
				buf := make([]byte, inputEventSize*16)
				for ctx.Err() == nil {
					n, err := f.Read(buf)
					if err != nil {
						return
					}
					for i := 0; i+inputEventSize <= n; i += inputEventSize {
						if PowerKeyPressed(buf[i : i+inputEventSize]) {
							select {
							case out <- PowerOff:
							default:
							}
						}
					}
				}
			}()
		}
		sleepCtx(ctx, time.Second)
	}
}

// Meminfo returns MemTotal and MemAvailable in KiB from /proc/meminfo text.
func Meminfo(r io.Reader) (total, avail int64, err error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		v, perr := strconv.ParseInt(f[1], 10, 64)
		if perr != nil {
			continue
		}
		switch f[0] {
		case "MemTotal:":
			total = v
		case "MemAvailable:":
			avail = v
		}
	}
	if total == 0 {
		return 0, 0, fmt.Errorf("meminfo: no MemTotal")
	}
	return total, avail, sc.Err()
}

func memoryLine() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return err.Error()
	}
	total, avail, err := Meminfo(bytes.NewReader(b))
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%d KiB of %d KiB (MemTotal - MemAvailable)", total-avail, total)
}

func uptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	s, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return "?"
	}
	return (time.Duration(s * float64(time.Second))).Round(10 * time.Millisecond).String()
}
