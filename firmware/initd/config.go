// Package initd is the store box's PID 1: it mounts the kernel's file systems,
// loads the modules the hardware needs, mounts the STOREGATE and data
// partitions, brings up the network, supervises the gateway and reboots or
// powers off cleanly. Nothing else runs on the box.
package initd

import (
	"io"
	"strings"
	"time"
)

// DefaultModules are the drivers a store box may need, by module name; the
// image builder copies them and their dependencies into the initramfs, and
// init loads those that the kernel does not have built in.
func DefaultModules() []string {
	return []string{
		// buses and storage: virtio, SATA/AHCI, NVMe, eMMC/SD, USB
		"virtio_pci", "virtio_mmio", "virtio_blk", "virtio_scsi", "sd_mod", "ahci", "nvme",
		"mmc_block", "sdhci_pci", "sdhci_acpi", "sdhci_of_arasan", "sdhci_iproc",
		"xhci_pci", "xhci_plat_hcd", "ehci_pci", "ehci_platform", "ohci_pci", "uhci_hcd",
		"usb_storage", "uas",
		// network
		"virtio_net", "e1000", "e1000e", "igb", "igc", "r8169",
		// USB serial adapters technicians plug in
		"ftdi_sio", "pl2303", "cp210x", "ch341",
		// file systems
		"vfat", "nls_cp437", "nls_iso8859_1", "nls_utf8", "nls_ascii", "ext4", "crc32c_generic", "crc32c_intel",
		// power button, entropy, real-time clock
		"button", "evdev", "gpio_keys", "virtio_rng", "rtc_efi", "rtc_pl031",
	}
}

// Config says where things are. The zero value is not useful: use Defaults.
type Config struct {
	// ModulesDir is the module tree with modules.dep, /lib/modules/RELEASE.
	ModulesDir string
	// Modules are loaded with their dependencies.
	Modules []string
	// Gateway is the storegate binary.
	Gateway string
	// Console is the serial device the gateway runs its console on; empty:
	// no --console flag.
	Console string
	// FATName and DataName are the GPT partition names to look for.
	FATName, DataName string
	// FATMount and DataMount are where they are mounted.
	FATMount, DataMount string
	// DefaultPolicy is copied to the FAT partition when it has no policy.yaml.
	DefaultPolicy string
	// E2fsck and Mke2fs check and create the data file system.
	E2fsck, Mke2fs string
	// DeviceWait bounds the wait for the partitions to appear.
	DeviceWait time.Duration
	// Debug adds the gateway's events to the console and starts a shell on
	// DebugShellTTY when a shell is in the image.
	Debug         bool
	DebugShell    string
	DebugShellTTY string
	// Log is where init writes its lines (the kernel console).
	Log io.Writer
}

// Defaults returns the configuration of the image for kernel release rel.
func Defaults(rel string, log io.Writer) Config {
	return Config{
		ModulesDir:    "/lib/modules/" + rel,
		Modules:       DefaultModules(),
		Gateway:       "/bin/storegate",
		Console:       "/dev/ttyS0",
		FATName:       "STOREGATE",
		DataName:      "storegate-data",
		FATMount:      "/storegate",
		DataMount:     "/var/lib/storegate",
		DefaultPolicy: "/etc/storegate/policy.yaml",
		E2fsck:        "/sbin/e2fsck",
		Mke2fs:        "/sbin/mke2fs",
		DeviceWait:    30 * time.Second,
		DebugShell:    "/bin/sh",
		DebugShellTTY: "/dev/tty1",
		Log:           log,
	}
}

// ApplyCmdline adjusts c from the kernel command line:
// storegate.console=ttyS1 (or "none"), storegate.debug=1.
func (c *Config) ApplyCmdline(cmdline string) {
	for _, f := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "storegate.console":
			switch {
			case v == "none" || v == "":
				c.Console = ""
			case strings.HasPrefix(v, "/dev/"):
				c.Console = v
			default:
				c.Console = "/dev/" + v
			}
		case "storegate.debug":
			c.Debug = v == "1" || v == "true" || v == "yes"
		}
	}
}
