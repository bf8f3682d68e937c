package kmod

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const sampleDep = `kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/drivers/usb/serial/ftdi_sio.ko: kernel/drivers/usb/serial/usbserial.ko kernel/drivers/usb/core/usbcore.ko kernel/drivers/usb/common/usb-common.ko
kernel/drivers/usb/serial/usbserial.ko: kernel/drivers/usb/core/usbcore.ko kernel/drivers/usb/common/usb-common.ko
kernel/drivers/usb/core/usbcore.ko: kernel/drivers/usb/common/usb-common.ko
kernel/drivers/usb/common/usb-common.ko:
kernel/drivers/block/virtio_blk.ko.xz:
`

func TestOrder(t *testing.T) {
	ix, err := ParseDep(strings.NewReader(sampleDep))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		in      []string
		files   []string
		missing []string
	}{
		{"deps first, reverse of modules.dep", []string{"ext4"},
			[]string{"kernel/fs/jbd2/jbd2.ko", "kernel/fs/mbcache.ko", "kernel/lib/crc16.ko", "kernel/fs/ext4/ext4.ko"}, nil},
		{"shared deps once, dash and underscore alike", []string{"ftdi-sio", "usb_common"},
			[]string{"kernel/drivers/usb/common/usb-common.ko", "kernel/drivers/usb/core/usbcore.ko",
				"kernel/drivers/usb/serial/usbserial.ko", "kernel/drivers/usb/serial/ftdi_sio.ko"}, nil},
		{"compressed file", []string{"virtio_blk"}, []string{"kernel/drivers/block/virtio_blk.ko.xz"}, nil},
		{"unknown or built in", []string{"nvme", "ext4"},
			[]string{"kernel/fs/jbd2/jbd2.ko", "kernel/fs/mbcache.ko", "kernel/lib/crc16.ko", "kernel/fs/ext4/ext4.ko"}, []string{"nvme"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files, missing := ix.Order(tc.in...)
			if !reflect.DeepEqual(files, tc.files) || !reflect.DeepEqual(missing, tc.missing) {
				t.Errorf("Order(%v) = %v, %v; want %v, %v", tc.in, files, missing, tc.files, tc.missing)
			}
		})
	}
}

func TestParseDepErrors(t *testing.T) {
	for _, in := range []string{"no colon here\n", "../../etc/passwd.ko:\n", "kernel/a.ko: ../b.ko\n", "/abs/a.ko:\n", ": x.ko\n"} {
		if _, err := ParseDep(strings.NewReader(in)); err == nil {
			t.Errorf("ParseDep(%q): no error", in)
		}
	}
}

func TestLoaderInsertsInOrderAndToleratesLoaded(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(sampleDep), 0o644); err != nil {
		t.Fatal(err)
	}
	var got []string
	l := Loader{Dir: dir, Insert: func(p string) error {
		got = append(got, filepath.Base(p))
		if filepath.Base(p) == "usbcore.ko" {
			return unix.EEXIST
		}
		if filepath.Base(p) == "ftdi_sio.ko" {
			return errors.New("no such device")
		}
		return nil
	}}
	res, missing, err := l.Load("ftdi_sio", "r8169")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"usb-common.ko", "usbcore.ko", "usbserial.ko", "ftdi_sio.ko"}; !reflect.DeepEqual(got, want) {
		t.Errorf("inserted %v, want %v", got, want)
	}
	if !reflect.DeepEqual(missing, []string{"r8169"}) {
		t.Errorf("missing = %v", missing)
	}
	for _, r := range res {
		if (r.Err != nil) != (filepath.Base(r.File) == "ftdi_sio.ko") {
			t.Errorf("%s: err %v", r.File, r.Err)
		}
	}
}

func TestLoaderNoTree(t *testing.T) {
	if _, _, err := (Loader{Dir: t.TempDir()}).Load("ext4"); err == nil {
		t.Fatal("want an error for a tree without modules.dep")
	}
}

func FuzzParseDep(f *testing.F) {
	f.Add(sampleDep)
	f.Add("a.ko:\n# comment\n\nb.ko: a.ko a.ko\n")
	f.Fuzz(func(t *testing.T, s string) {
		ix, err := ParseDep(strings.NewReader(s))
		if err != nil {
			return
		}
		names := make([]string, 0, ix.Len())
		for n := range ix.path {
			names = append(names, n)
		}
		files, _ := ix.Order(names...)
		seen := map[string]bool{}
		for _, f := range files {
			if seen[f] || filepath.IsAbs(f) || strings.Contains(f, "..") {
				t.Fatalf("bad order entry %q in %v", f, files)
			}
			seen[f] = true
		}
	})
}
