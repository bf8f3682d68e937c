// Package firmware holds the boot test of the storegate firmware image: it
// boots the image built by `make firmware` under QEMU with UEFI firmware and
// drives it as an integrator and a technician would. The image's parts live
// in the packages below (initd, kmod, dhcp, netconf, initramfs).
package firmware
