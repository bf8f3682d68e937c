package dhcp

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Conn is the socket the client talks through; *net.UDPConn from Open fits.
type Conn interface {
	WriteTo(b []byte, addr net.Addr) (int, error)
	ReadFrom(b []byte) (int, net.Addr, error)
	SetReadDeadline(t time.Time) error
}

// Client acquires and renews a lease for one interface.
type Client struct {
	HWAddr net.HardwareAddr // the interface's MAC address
	Conn   Conn
	// Server is where requests are sent. Nil means 255.255.255.255:67.
	Server net.Addr
	// Hostname is sent as option 12 when not empty.
	Hostname string
	// Retries is how many times each request is sent. Zero means 4.
	Retries int
	// Timeout is the first wait for a reply; it doubles on each retry.
	// Zero means 2s.
	Timeout time.Duration
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
}

// ErrNak is returned when the server refuses the requested address.
var ErrNak = errors.New("dhcp: server answered NAK")

// Open returns a UDP socket on port 68 bound to the interface, able to send
// and receive broadcasts before the interface has an address.
func Open(ctx context.Context, ifname string) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				return
			}
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
				return
			}
			serr = unix.BindToDevice(int(fd), ifname)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(ctx, "udp4", "0.0.0.0:68")
	if err != nil {
		return nil, fmt.Errorf("dhcp: socket on %s: %w", ifname, err)
	}
	return pc.(*net.UDPConn), nil
}

// Acquire runs DISCOVER, OFFER, REQUEST, ACK and returns the lease.
func (c *Client) Acquire(ctx context.Context) (Lease, error) {
	xid := newXID()
	disc := c.request(xid, Discover)
	offer, err := c.exchange(ctx, disc, func(m *Message) bool { return m.Type() == Offer })
	if err != nil {
		return Lease{}, fmt.Errorf("dhcp: no offer: %w", err)
	}
	ol, err := lease(offer)
	if err != nil {
		return Lease{}, err
	}
	req := c.request(xid, Request)
	req.Options[optRequestedIP] = ol.Addr.Addr().AsSlice()
	if ol.Server.IsValid() {
		req.Options[optServerID] = ol.Server.AsSlice()
	}
	return c.finish(ctx, req)
}

// Renew asks the server to extend l; on NAK the caller must Acquire anew.
func (c *Client) Renew(ctx context.Context, l Lease) (Lease, error) {
	req := c.request(newXID(), Request)
	req.CIAddr = l.Addr.Addr()
	return c.finish(ctx, req)
}

func (c *Client) finish(ctx context.Context, req *Message) (Lease, error) {
	reply, err := c.exchange(ctx, req, func(m *Message) bool { return m.Type() == Ack || m.Type() == Nak })
	if err != nil {
		return Lease{}, fmt.Errorf("dhcp: no answer to request: %w", err)
	}
	if reply.Type() == Nak {
		return Lease{}, ErrNak
	}
	return lease(reply)
}

func (c *Client) request(xid uint32, typ byte) *Message {
	m := &Message{
		Op:     1,
		XID:    xid,
		Flags:  flagBcast, // we cannot receive unicast before we have an address
		CHAddr: c.HWAddr,
		Options: map[byte][]byte{
			optMsgType:   {typ},
			optParamList: {optSubnetMask, optRouter, optDNS, optLeaseTime, optRenewalT1},
			optMaxSize:   {0x05, 0xdc}, // 1500
			optClientID:  append([]byte{1}, c.HWAddr...),
		},
	}
	if c.Hostname != "" {
		m.Options[optHostname] = []byte(c.Hostname)
	}
	return m
}

// exchange sends m and waits for a matching reply, resending with a doubling
// timeout; the number of sends and the time are bounded.
func (c *Client) exchange(ctx context.Context, m *Message, want func(*Message) bool) (*Message, error) {
	dst := c.Server
	if dst == nil {
		dst = &net.UDPAddr{IP: net.IPv4bcast, Port: 67}
	}
	now := c.Now
	if now == nil {
		now = time.Now
	}
	retries, wait := c.Retries, c.Timeout
	if retries <= 0 {
		retries = 4
	}
	if wait <= 0 {
		wait = 2 * time.Second
	}
	buf := make([]byte, 1500)
	var last error = errors.New("timed out")
	for try := 0; try < retries; try++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if _, err := c.Conn.WriteTo(m.Marshal(), dst); err != nil {
			return nil, err
		}
		deadline := now().Add(wait)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		// Each read either returns a packet or hits the deadline; stray
		// packets are bounded by what arrives before it.
		for n := 0; n < 256; n++ {
			if err := c.Conn.SetReadDeadline(deadline); err != nil {
				return nil, err
			}
			k, _, err := c.Conn.ReadFrom(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return nil, err
			}
			r, err := Unmarshal(buf[:k])
			if err != nil {
				last = err
				continue
			}
			if r.Op != 2 || r.XID != m.XID || !bytes.HasPrefix(r.CHAddr, m.CHAddr) || !want(r) {
				continue
			}
			return r, nil
		}
		wait *= 2
	}
	return nil, last
}

func newXID() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])
}

// Mask returns the dotted-quad form of a prefix length, for logs.
func Mask(p netip.Prefix) string {
	return net.IP(net.CIDRMask(p.Bits(), 32)).String()
}
