package gateway

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/storegate/storegate/gateway/events"
)

// SpoolPrefix is the path of the spool's endpoints on the proxy listener.
const SpoolPrefix = "/spool/v1/"

// handleOther serves a request that is not CONNECT: the spool's endpoints
// are handed to an http.Server (with the bytes already read replayed);
// anything else gets 405 and event 104.
func (s *Server) handleOther(cc *clientConn, h *requestHead, buf []byte, bp *[]byte) {
	path := string(h.target)
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if strings.HasPrefix(path, SpoolPrefix) || path == strings.TrimSuffix(SpoolPrefix, "/") {
		replay := append([]byte(nil), buf...)
		putHeadBuf(bp, buf)
		_ = cc.c.SetReadDeadline(time.Time{})
		s.untrack(cc) // the spool's http.Server owns the connection from here
		s.spoolConn(&replayConn{Conn: cc.c, pending: replay})
		return
	}
	method := string(h.method)
	putHeadBuf(bp, buf)
	s.refuseNotConnect(cc, method, path)
}

func (s *Server) refuseNotConnect(cc *clientConn, method, path string) {
	if len(path) > 200 {
		path = path[:200]
	}
	s.refuse(cc, "", errNotConnect, events.Str(events.KeyMethod, method), events.Str(events.KeyPath, path))
	_ = cc.c.Close()
}

// spoolConn hands a connection to the spool's http.Server, starting it on
// first use.
func (s *Server) spoolConn(c net.Conn) {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		_ = c.Close()
		return
	}
	if s.spoolSrv == nil {
		l := &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
		mux := http.NewServeMux()
		if s.cfg.Spool != nil {
			mux.Handle(SpoolPrefix, s.cfg.Spool)
		}
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			// A keep-alive connection that sends something else afterwards.
			s.countRefusal("not connect")
			s.emit.Emit(events.NotConnect, "not a CONNECT request",
				events.Str(events.KeyClient, r.RemoteAddr), events.Str(events.KeyMethod, r.Method), events.Int(events.KeyStatus, 405))
			w.Header().Set("Allow", "CONNECT")
			http.Error(w, "this gateway only tunnels with CONNECT", http.StatusMethodNotAllowed)
		})
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 64 << 10}
		s.spoolSrv = srv
		s.spoolL = l
		go func() { _ = srv.Serve(l) }()
	}
	l := s.spoolL
	s.mu.Unlock()
	select {
	case l.ch <- c:
	case <-l.done:
		_ = c.Close()
	}
}

// chanListener is a net.Listener fed with connections by the proxy listener.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }

// replayConn returns bytes already read before reading the connection.
type replayConn struct {
	net.Conn
	pending []byte
}

func (r *replayConn) Read(b []byte) (int, error) {
	if len(r.pending) > 0 {
		n := copy(b, r.pending)
		r.pending = r.pending[n:]
		return n, nil
	}
	return r.Conn.Read(b)
}
