package initd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// FindPartition returns the device node (/dev/NAME) of the partition whose
// GPT name is name, reading the uevent files under sysBlock (/sys/class/block).
// When several disks carry it (a USB stick with another image), the first in
// device-name order wins, so the choice is stable.
func FindPartition(sysBlock, name string) (string, error) {
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return "", err
	}
	var found []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(sysBlock, e.Name(), "uevent"))
		if err != nil {
			continue
		}
		ev := parseUevent(b)
		if ev["DEVTYPE"] == "partition" && ev["PARTNAME"] == name && ev["DEVNAME"] != "" {
			found = append(found, "/dev/"+ev["DEVNAME"])
		}
	}
	if len(found) == 0 {
		return "", fmt.Errorf("no partition named %q", name)
	}
	sort.Strings(found)
	return found[0], nil
}

func parseUevent(b []byte) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			m[k] = v
		}
	}
	return m
}

// ext4Magic is at offset 0x38 of the superblock, which starts at 1024.
const ext4MagicOff = 1024 + 0x38

// HasExt4 reports whether the device or file starts with an ext2/3/4 superblock.
func HasExt4(r io.ReaderAt) (bool, error) {
	var m [2]byte
	if _, err := r.ReadAt(m[:], ext4MagicOff); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, err
	}
	return m[0] == 0x53 && m[1] == 0xef, nil
}
