// Package dhcp is a minimal DHCPv4 client (RFC 2131): DISCOVER, OFFER,
// REQUEST, ACK and renewal, enough for a store box to get its address,
// router and DNS servers from the store's network.
package dhcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Message types (option 53).
const (
	Discover = 1
	Offer    = 2
	Request  = 3
	Decline  = 4
	Ack      = 5
	Nak      = 6
	Release  = 7
)

// Options used by the client.
const (
	optPad         = 0
	optSubnetMask  = 1
	optRouter      = 3
	optDNS         = 6
	optHostname    = 12
	optRequestedIP = 50
	optLeaseTime   = 51
	optMsgType     = 53
	optServerID    = 54
	optParamList   = 55
	optMaxSize     = 57
	optRenewalT1   = 58
	optClientID    = 61
	optEnd         = 255
)

const (
	headerLen   = 236
	magicCookie = 0x63825363
	flagBcast   = 0x8000
)

// Message is one BOOTP/DHCP packet.
type Message struct {
	Op      byte // 1 request, 2 reply
	XID     uint32
	Secs    uint16
	Flags   uint16
	CIAddr  netip.Addr
	YIAddr  netip.Addr
	SIAddr  netip.Addr
	GIAddr  netip.Addr
	CHAddr  net.HardwareAddr
	Options map[byte][]byte
}

// Type is the DHCP message type (option 53), or 0.
func (m *Message) Type() byte {
	if v := m.Options[optMsgType]; len(v) == 1 {
		return v[0]
	}
	return 0
}

// Marshal encodes m; options are written in ascending order so the same
// message always encodes to the same bytes.
func (m *Message) Marshal() []byte {
	b := make([]byte, headerLen, 300)
	b[0] = m.Op
	b[1] = 1 // Ethernet
	b[2] = 6
	binary.BigEndian.PutUint32(b[4:], m.XID)
	binary.BigEndian.PutUint16(b[8:], m.Secs)
	binary.BigEndian.PutUint16(b[10:], m.Flags)
	putAddr(b[12:16], m.CIAddr)
	putAddr(b[16:20], m.YIAddr)
	putAddr(b[20:24], m.SIAddr)
	putAddr(b[24:28], m.GIAddr)
	copy(b[28:44], m.CHAddr)
	b = binary.BigEndian.AppendUint32(b, magicCookie)
	for code := 1; code < 255; code++ {
		v, ok := m.Options[byte(code)]
		if !ok {
			continue
		}
		for len(v) > 255 { // long options are split (RFC 3396)
			b = append(b, byte(code), 255)
			b = append(b, v[:255]...)
			v = v[255:]
		}
		b = append(b, byte(code), byte(len(v)))
		b = append(b, v...)
	}
	b = append(b, optEnd)
	for len(b) < 300 { // some servers drop BOOTP packets shorter than 300 bytes
		b = append(b, optPad)
	}
	return b
}

func putAddr(dst []byte, a netip.Addr) {
	if a.Is4() {
		v := a.As4()
		copy(dst, v[:])
	}
}

// Unmarshal decodes a packet; it rejects truncated headers, a missing magic
// cookie and options that run past the end.
func Unmarshal(b []byte) (*Message, error) {
	if len(b) < headerLen+4 {
		return nil, fmt.Errorf("dhcp: packet of %d bytes is shorter than the %d-byte header", len(b), headerLen+4)
	}
	if b[1] != 1 || b[2] != 6 {
		return nil, fmt.Errorf("dhcp: hardware type %d length %d, want Ethernet (1, 6)", b[1], b[2])
	}
	if binary.BigEndian.Uint32(b[headerLen:]) != magicCookie {
		return nil, errors.New("dhcp: no magic cookie")
	}
	m := &Message{
		Op:      b[0],
		XID:     binary.BigEndian.Uint32(b[4:]),
		Secs:    binary.BigEndian.Uint16(b[8:]),
		Flags:   binary.BigEndian.Uint16(b[10:]),
		CIAddr:  netip.AddrFrom4([4]byte(b[12:16])),
		YIAddr:  netip.AddrFrom4([4]byte(b[16:20])),
		SIAddr:  netip.AddrFrom4([4]byte(b[20:24])),
		GIAddr:  netip.AddrFrom4([4]byte(b[24:28])),
		CHAddr:  net.HardwareAddr(append([]byte(nil), b[28:34]...)),
		Options: map[byte][]byte{},
	}
	opts := b[headerLen+4:]
	for i := 0; i < len(opts); {
		code := opts[i]
		if code == optEnd {
			break
		}
		if code == optPad {
			i++
			continue
		}
		if i+1 >= len(opts) {
			return nil, fmt.Errorf("dhcp: option %d has no length", code)
		}
		n := int(opts[i+1])
		if i+2+n > len(opts) {
			return nil, fmt.Errorf("dhcp: option %d of length %d runs past the packet", code, n)
		}
		m.Options[code] = append(m.Options[code], opts[i+2:i+2+n]...) // RFC 3396 concatenation
		i += 2 + n
	}
	return m, nil
}

// Lease is what a server granted.
type Lease struct {
	Addr     netip.Prefix // address and subnet
	Router   netip.Addr   // invalid when the server named none
	DNS      []netip.Addr
	Server   netip.Addr // server identifier
	Duration time.Duration
	Renew    time.Duration // T1
}

// lease reads a lease out of an ACK (or OFFER).
func lease(m *Message) (Lease, error) {
	if !m.YIAddr.Is4() || m.YIAddr.IsUnspecified() {
		return Lease{}, errors.New("dhcp: reply offers no address")
	}
	l := Lease{Duration: time.Hour}
	bits := 24
	if v := m.Options[optSubnetMask]; len(v) == 4 {
		ones, size := net.IPMask(v).Size()
		if size != 32 {
			return Lease{}, fmt.Errorf("dhcp: subnet mask %v is not contiguous", net.IP(v))
		}
		bits = ones
	}
	l.Addr = netip.PrefixFrom(m.YIAddr, bits)
	if v := m.Options[optRouter]; len(v) >= 4 {
		l.Router = netip.AddrFrom4([4]byte(v[:4]))
	}
	for v := m.Options[optDNS]; len(v) >= 4 && len(l.DNS) < 3; v = v[4:] {
		l.DNS = append(l.DNS, netip.AddrFrom4([4]byte(v[:4])))
	}
	if v := m.Options[optServerID]; len(v) == 4 {
		l.Server = netip.AddrFrom4([4]byte(v))
	}
	if v := m.Options[optLeaseTime]; len(v) == 4 {
		s := binary.BigEndian.Uint32(v)
		if s == 0xffffffff {
			l.Duration = 100 * 365 * 24 * time.Hour
		} else {
			l.Duration = time.Duration(s) * time.Second
		}
	}
	l.Duration = max(l.Duration, time.Minute)
	l.Renew = l.Duration / 2
	if v := m.Options[optRenewalT1]; len(v) == 4 {
		if t1 := time.Duration(binary.BigEndian.Uint32(v)) * time.Second; t1 > 0 && t1 < l.Duration {
			l.Renew = t1
		}
	}
	return l, nil
}
