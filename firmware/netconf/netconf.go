// Package netconf configures an IPv4 interface through rtnetlink: link up,
// address, default route, and the resolver file, so the box needs no ip(8).
package netconf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// LinkUp sets the interface with index ifindex up.
func LinkUp(ifindex int) error {
	msg := make([]byte, unix.SizeofIfInfomsg)
	info := (*unix.IfInfomsg)(unsafe.Pointer(&msg[0]))
	info.Family = unix.AF_UNSPEC
	info.Index = int32(ifindex)
	info.Flags = unix.IFF_UP
	info.Change = unix.IFF_UP
	return request(unix.RTM_NEWLINK, 0, msg)
}

// AddAddr gives the interface the address p (replacing the same address).
func AddAddr(ifindex int, p netip.Prefix) error {
	msg, err := addrMsg(ifindex, p)
	if err != nil {
		return err
	}
	return request(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, msg)
}

// DelAddr removes the address p from the interface.
func DelAddr(ifindex int, p netip.Prefix) error {
	msg, err := addrMsg(ifindex, p)
	if err != nil {
		return err
	}
	return request(unix.RTM_DELADDR, 0, msg)
}

func addrMsg(ifindex int, p netip.Prefix) ([]byte, error) {
	if !p.Addr().Is4() {
		return nil, fmt.Errorf("netconf: %s is not an IPv4 prefix", p)
	}
	msg := make([]byte, unix.SizeofIfAddrmsg)
	am := (*unix.IfAddrmsg)(unsafe.Pointer(&msg[0]))
	am.Family = unix.AF_INET
	am.Prefixlen = uint8(p.Bits())
	am.Scope = unix.RT_SCOPE_UNIVERSE
	am.Index = uint32(ifindex)
	a := p.Addr().AsSlice()
	msg = attr(msg, unix.IFA_LOCAL, a)
	msg = attr(msg, unix.IFA_ADDRESS, a)
	if p.Bits() < 31 {
		bc := p.Masked().Addr().As4()
		host := ^uint32(0) >> p.Bits()
		binary.BigEndian.PutUint32(bc[:], binary.BigEndian.Uint32(bc[:])|host)
		msg = attr(msg, unix.IFA_BROADCAST, bc[:])
	}
	return msg, nil
}

// SetDefaultRoute points the IPv4 default route at gw through the interface.
func SetDefaultRoute(ifindex int, gw netip.Addr) error {
	if !gw.Is4() {
		return fmt.Errorf("netconf: gateway %s is not IPv4", gw)
	}
	msg := make([]byte, unix.SizeofRtMsg)
	rt := (*unix.RtMsg)(unsafe.Pointer(&msg[0]))
	rt.Family = unix.AF_INET
	rt.Table = unix.RT_TABLE_MAIN
	rt.Protocol = unix.RTPROT_BOOT
	rt.Scope = unix.RT_SCOPE_UNIVERSE
	rt.Type = unix.RTN_UNICAST
	msg = attr(msg, unix.RTA_GATEWAY, gw.AsSlice())
	oif := make([]byte, 4)
	binary.NativeEndian.PutUint32(oif, uint32(ifindex))
	msg = attr(msg, unix.RTA_OIF, oif)
	return request(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, msg)
}

// WriteResolvConf writes the name servers to path (e.g. /etc/resolv.conf)
// with a temporary file and a rename.
func WriteResolvConf(path string, servers []netip.Addr) error {
	var b strings.Builder
	b.WriteString("# written by storegate-init\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	b.WriteString("options timeout:2 attempts:2\n")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func attr(b []byte, typ uint16, data []byte) []byte {
	l := unix.SizeofRtAttr + len(data)
	h := make([]byte, unix.SizeofRtAttr)
	binary.NativeEndian.PutUint16(h[0:], uint16(l))
	binary.NativeEndian.PutUint16(h[2:], typ)
	b = append(b, h...)
	b = append(b, data...)
	for len(b)%unix.NLMSG_ALIGNTO != 0 {
		b = append(b, 0)
	}
	return b
}

// request sends one rtnetlink request and waits for its acknowledgement.
func request(typ uint16, flags uint16, body []byte) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netconf: netlink socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 5}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	const seq = 1
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	msg = append(msg, body...)
	h := (*unix.NlMsghdr)(unsafe.Pointer(&msg[0]))
	h.Len = uint32(len(msg))
	h.Type = typ
	h.Flags = unix.NLM_F_REQUEST | unix.NLM_F_ACK | flags
	h.Seq = seq
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netconf: netlink send: %w", err)
	}
	buf := make([]byte, 8192)
	for range 16 { // the ack comes first in practice; bounded all the same
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("netconf: netlink receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Seq != seq || m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return errors.New("netconf: short netlink error message")
			}
			if code := int32(binary.NativeEndian.Uint32(m.Data[:4])); code != 0 {
				return fmt.Errorf("netconf: %w", unix.Errno(-code))
			}
			return nil
		}
	}
	return errors.New("netconf: no netlink acknowledgement")
}
