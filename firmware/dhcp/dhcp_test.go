package dhcp

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

var testMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}

// server is a DHCP server on loopback that hands out 10.0.2.15/24 and
// answers REQUESTs for anything else with NAK.
type server struct {
	pc    net.PacketConn
	seen  chan *Message
	drops int // how many first packets to ignore
}

func newServer(t *testing.T, drops int) *server {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{pc: pc, seen: make(chan *Message, 16), drops: drops}
	t.Cleanup(func() { pc.Close() })
	go s.serve()
	return s
}

func (s *server) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := Unmarshal(buf[:n])
		if err != nil {
			continue
		}
		s.seen <- m
		if s.drops > 0 {
			s.drops--
			continue
		}
		reply := &Message{Op: 2, XID: m.XID, Flags: m.Flags, CHAddr: m.CHAddr,
			YIAddr:  netip.MustParseAddr("10.0.2.15"),
			Options: map[byte][]byte{optServerID: {10, 0, 2, 2}}}
		switch {
		case m.Type() == Discover:
			reply.Options[optMsgType] = []byte{Offer}
		case m.Type() == Request && (net.IP(m.Options[optRequestedIP]).Equal(net.IPv4(10, 0, 2, 15)) || m.CIAddr == netip.MustParseAddr("10.0.2.15")):
			reply.Options[optMsgType] = []byte{Ack}
			reply.Options[optSubnetMask] = []byte{255, 255, 255, 0}
			reply.Options[optRouter] = []byte{10, 0, 2, 2}
			reply.Options[optDNS] = []byte{10, 0, 2, 3, 10, 0, 2, 4}
			reply.Options[optLeaseTime] = binary.BigEndian.AppendUint32(nil, 86400)
		default:
			reply.Options[optMsgType] = []byte{Nak}
		}
		// A stray reply for someone else first: the client must skip it.
		other := *reply
		other.XID++
		s.pc.WriteTo(other.Marshal(), from)
		s.pc.WriteTo([]byte("garbage"), from)
		s.pc.WriteTo(reply.Marshal(), from)
	}
}

func newClient(t *testing.T, s *server) *Client {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return &Client{HWAddr: testMAC, Conn: pc, Server: s.pc.LocalAddr(), Hostname: "store-1", Timeout: 200 * time.Millisecond}
}

func TestAcquireAndRenew(t *testing.T) {
	s := newServer(t, 1) // the first DISCOVER is lost: the client must resend
	c := newClient(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l, err := c.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := Lease{
		Addr:     netip.MustParsePrefix("10.0.2.15/24"),
		Router:   netip.MustParseAddr("10.0.2.2"),
		DNS:      []netip.Addr{netip.MustParseAddr("10.0.2.3"), netip.MustParseAddr("10.0.2.4")},
		Server:   netip.MustParseAddr("10.0.2.2"),
		Duration: 24 * time.Hour,
		Renew:    12 * time.Hour,
	}
	if !reflect.DeepEqual(l, want) {
		t.Fatalf("lease = %+v, want %+v", l, want)
	}
	var types []byte
	for len(s.seen) > 0 {
		m := <-s.seen
		types = append(types, m.Type())
		if m.Flags&flagBcast == 0 || string(m.Options[optHostname]) != "store-1" {
			t.Errorf("request without broadcast flag or hostname: %+v", m)
		}
	}
	if !reflect.DeepEqual(types, []byte{Discover, Discover, Request}) {
		t.Errorf("server saw message types %v", types)
	}
	if l2, err := c.Renew(ctx, l); err != nil || l2.Addr != l.Addr {
		t.Fatalf("Renew = %+v, %v", l2, err)
	}
	if Mask(l.Addr) != "255.255.255.0" {
		t.Errorf("Mask = %s", Mask(l.Addr))
	}
}

func TestRenewNak(t *testing.T) {
	s := newServer(t, 0)
	c := newClient(t, s)
	_, err := c.Renew(context.Background(), Lease{Addr: netip.MustParsePrefix("10.0.9.9/24")})
	if !errors.Is(err, ErrNak) {
		t.Fatalf("err = %v, want ErrNak", err)
	}
}

func TestNoServerGivesUp(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	silent, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	c := &Client{HWAddr: testMAC, Conn: pc, Server: silent.LocalAddr(), Retries: 2, Timeout: 20 * time.Millisecond}
	if _, err := c.Acquire(context.Background()); err == nil {
		t.Fatal("want an error without a server")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Acquire(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: err = %v", err)
	}
}

func TestUnmarshalRejects(t *testing.T) {
	good := (&Message{Op: 2, CHAddr: testMAC, Options: map[byte][]byte{optMsgType: {Ack}}}).Marshal()
	if _, err := Unmarshal(good); err != nil {
		t.Fatalf("good packet: %v", err)
	}
	cases := map[string][]byte{
		"short":     good[:100],
		"no cookie": append(append([]byte{}, good[:headerLen]...), 0, 0, 0, 0),
		"overrun":   append(append([]byte{}, good[:headerLen+4]...), optDNS, 8, 1, 2),
		"no length": append(append([]byte{}, good[:headerLen+4]...), optDNS),
		"not ether": append([]byte{2, 6, 6}, good[3:]...),
	}
	for name, b := range cases {
		if _, err := Unmarshal(b); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestLongOptionRoundTrip(t *testing.T) {
	long := make([]byte, 600)
	for i := range long {
		long[i] = byte(i)
	}
	m := &Message{Op: 1, CHAddr: testMAC, Options: map[byte][]byte{optHostname: long}}
	got, err := Unmarshal(m.Marshal())
	if err != nil || !reflect.DeepEqual(got.Options[optHostname], long) {
		t.Fatalf("round trip of a 600-byte option: %v", err)
	}
}

func FuzzUnmarshal(f *testing.F) {
	f.Add((&Message{Op: 2, XID: 7, CHAddr: testMAC, YIAddr: netip.MustParseAddr("10.0.2.15"),
		Options: map[byte][]byte{optMsgType: {Ack}, optSubnetMask: {255, 255, 0, 0}, optLeaseTime: {0, 0, 1, 0}}}).Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Unmarshal(b)
		if err != nil {
			return
		}
		_, _ = lease(m)
		again, err := Unmarshal(m.Marshal())
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if again.XID != m.XID || again.YIAddr != m.YIAddr || len(again.Options) != len(m.Options) {
			t.Fatalf("round trip changed the message: %+v vs %+v", m, again)
		}
	})
}
