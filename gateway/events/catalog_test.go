package events

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestNewCatalog(t *testing.T) {
	for _, lang := range []string{"", "en"} {
		c, err := NewCatalog(lang)
		if c != nil || err != nil {
			t.Errorf("NewCatalog(%q) = %v, %v; want nil, nil", lang, c, err)
		}
		if got, ok := c.Translate("storegate started"); ok || got != "storegate started" {
			t.Errorf("nil catalog translated: %q %v", got, ok)
		}
	}
	c, err := NewCatalog("sv")
	if err != nil || c.Language() != "sv" {
		t.Fatalf("sv: %v %v", c, err)
	}
	if _, err := NewCatalog("fr"); err == nil || !strings.Contains(err.Error(), "en, sv") {
		t.Errorf("fr: err = %v, want one naming the valid languages", err)
	}
}

func TestTranslateSwedish(t *testing.T) {
	c, _ := NewCatalog("sv")
	cases := []struct {
		name, in, want string
		ok             bool
	}{
		{"exact", "storegate started", "storegate startad", true},
		{"exact wins over head", "tunnel closed: the new policy no longer allows its target",
			"tunneln stängd: den nya policyn tillåter inte längre dess mål", true},
		{"head keeps dynamic tail", "host not allowed: evil.example", "värden är inte tillåten: evil.example", true},
		{"head with error tail", "cannot start: listen tcp :8080: bind: address already in use",
			"kan inte starta: listen tcp :8080: bind: address already in use", true},
		{"head and known tail", "policy reloaded: first policy", "policyn omladdad: första policyn", true},
		{"one placeholder", "spool open: 12 messages waiting", "spoolen öppnad: 12 meddelanden väntar", true},
		{"two placeholders", "spool: dropped 3 messages older than 72h0m0s (spool.max_age)",
			"spoolen: kastade 3 meddelanden äldre än 72h0m0s (spool.max_age)", true},
		{"quoted placeholders", `server name "a.example" does not match the CONNECT host "b.example"`,
			`servernamnet "a.example" matchar inte CONNECT-värden "b.example"`, true},
		{"leading placeholder", "TLS 1.0 is below the minimum TLS 1.2", "TLS 1.0 är lägre än minimiversionen TLS 1.2", true},
		{"version refused", "SSL 3.0 refused", "SSL 3.0 avvisad", true},
		{"empty placeholder is no match", "spool open:  messages waiting", "spool open:  messages waiting", false},
		{"unknown", "something new happened", "something new happened", false},
		{"unknown head", "tlspeek: parse from client: bad record", "tlspeek: parse from client: bad record", false},
		{"prefix and suffix overlap", "uplink up again after down", "uplink up again after down", false},
		{"empty", "", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := c.Translate(tc.in)
			if got != tc.want || ok != tc.ok {
				t.Errorf("Translate(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func decodeLines(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func TestLogInSwedish(t *testing.T) {
	var buf bytes.Buffer
	now := func() time.Time { return time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC) }
	l := NewLog(&buf, Options{Now: now, Language: "sv"})
	l.Emit(NotAllowed, "host not allowed: evil.example", Str(KeyTarget, "evil.example:443"))
	l.Emit(Info, "not in the catalog")
	if err := l.SetLanguage("en"); err != nil {
		t.Fatal(err)
	}
	l.Emit(Started, "storegate started")
	if err := l.SetLanguage("xx"); err == nil {
		t.Error("SetLanguage(xx) accepted")
	}
	l.Emit(Stopped, "storegate stopped")
	l.Close()

	got := decodeLines(t, buf.Bytes())
	want := []map[string]any{
		{"msg": "värden är inte tillåten: evil.example", KeyMsgEN: "host not allowed: evil.example", "event_id": 105.0, KeyTarget: "evil.example:443"},
		{"msg": "not in the catalog", "event_id": 100.0},
		{"msg": "storegate started", "event_id": 101.0},
		{"msg": "storegate stopped", "event_id": 102.0},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d lines: %s", len(got), buf.String())
	}
	for i, w := range want {
		for k, v := range w {
			if got[i][k] != v {
				t.Errorf("line %d: %s = %v, want %v", i, k, got[i][k], v)
			}
		}
		if _, has := got[i][KeyMsgEN]; has != (w[KeyMsgEN] != nil) {
			t.Errorf("line %d: msg_en present = %v: %v", i, has, got[i])
		}
	}
}

// TestEmitEnglishAllocationFree keeps the default path as cheap as it was.
func TestEmitEnglishAllocationFree(t *testing.T) {
	l := NewLog(io.Discard, Options{Recent: 2})
	defer l.Close()
	f := []Field{Str(KeyTarget, "a.example:443"), Int(KeyBytesUp, 10)}
	for range 100 { // warm the buffers
		l.Emit(ConnectReceived, "tunnel closed", f...)
	}
	if n := testing.AllocsPerRun(1000, func() { l.Emit(ConnectReceived, "tunnel closed", f...) }); n >= 1 {
		t.Errorf("English Emit allocates %.1f times per event", n)
	}
}

// emittedMessages finds the event messages written as literals in the
// gateway's sources: Emit/emit calls with a string literal, a literal
// followed by "+", or fmt.Sprintf with a literal format; and the refusal
// texts in headError, upstreamError and tlspeek's Decision literals.
func emittedMessages(t *testing.T, roots ...string) map[string]string {
	t.Helper()
	verbs := regexp.MustCompile(`%[-+# 0-9.]*[a-zA-Z]`)
	lit := func(e ast.Expr) (string, bool) {
		b, ok := e.(*ast.BasicLit)
		if !ok || b.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(b.Value)
		return s, err == nil
	}
	sample := func(e ast.Expr) (string, bool) {
		if s, ok := lit(e); ok {
			return s, true
		}
		switch x := e.(type) {
		case *ast.BinaryExpr: // "literal: " + detail
			if s, ok := lit(x.X); ok && x.Op == token.ADD {
				return s + "x.example", true
			}
			if _, ok := lit(x.Y); ok && x.Op == token.ADD {
				return "", false // dynamic head: nothing to key on
			}
		case *ast.CallExpr: // fmt.Sprintf("... %d ...", n)
			if sel, ok := x.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "Sprintf" && len(x.Args) > 0 {
				if s, ok := lit(x.Args[0]); ok {
					return verbs.ReplaceAllString(s, "7"), true
				}
			}
		}
		return "", false
	}
	found := map[string]string{}
	fset := token.NewFileSet()
	for _, root := range roots {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && (d.Name() == "testdata" || d.Name() == "events") {
				return filepath.SkipDir
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				switch x := n.(type) {
				case *ast.CallExpr:
					var name string
					switch fn := x.Fun.(type) {
					case *ast.SelectorExpr:
						name = fn.Sel.Name
					case *ast.Ident:
						name = fn.Name
					}
					if (name == "Emit" || name == "emit") && len(x.Args) >= 2 {
						if s, ok := sample(x.Args[1]); ok {
							found[s] = fset.Position(x.Pos()).String()
						}
					}
				case *ast.CompositeLit:
					var typ string
					switch ty := x.Type.(type) {
					case *ast.Ident:
						typ = ty.Name
					case *ast.SelectorExpr:
						typ = ty.Sel.Name
					}
					for i, el := range x.Elts {
						key, val := "", el
						if kv, ok := el.(*ast.KeyValueExpr); ok {
							if id, ok := kv.Key.(*ast.Ident); ok {
								key = id.Name
							}
							val = kv.Value
						}
						take := typ == "headError" && i == 1 ||
							typ == "upstreamError" && key == "what" ||
							typ == "Decision" && key == "Msg"
						if !take {
							continue
						}
						if s, ok := sample(val); ok {
							found[s] = fset.Position(val.Pos()).String()
						}
					}
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return found
}

// TestSwedishCoversEmittedMessages fails when a message is added to the
// gateway without a Swedish entry.
func TestSwedishCoversEmittedMessages(t *testing.T) {
	msgs := emittedMessages(t, "..", "../../cmd", "../../device")
	if len(msgs) < 30 {
		t.Fatalf("found only %d messages; the source scan is broken: %v", len(msgs), msgs)
	}
	for _, must := range []string{"storegate started", "tunnel closed", "not a CONNECT request", "TLS session verified", "uplink is down"} {
		if _, ok := msgs[must]; !ok {
			t.Errorf("the scan missed %q", must)
		}
	}
	t.Logf("%d messages in the sources", len(msgs))
	c, _ := NewCatalog("sv")
	for m, where := range msgs {
		if _, ok := c.Translate(m); !ok {
			t.Errorf("%s: no Swedish for %q (add it to catalog_sv.go)", where, m)
		}
	}
}

func FuzzTranslate(f *testing.F) {
	for _, s := range []string{"storegate started", "host not allowed: a", "spool: dropped 1 messages older than 1h (spool.max_age)",
		"TLS 1.0 is below the minimum TLS 1.2", "uplink up again after down", ": ", "{}"} {
		f.Add(s)
	}
	c, _ := NewCatalog("sv")
	f.Fuzz(func(t *testing.T, msg string) {
		got, ok := c.Translate(msg)
		if !ok && got != msg {
			t.Fatalf("untranslated %q changed to %q", msg, got)
		}
		if ok && (got == "" || utf8.ValidString(msg) && !utf8.ValidString(got)) {
			t.Fatalf("Translate(%q) = %q", msg, got)
		}
	})
}

func BenchmarkEmit(b *testing.B) {
	for _, lang := range []string{"en", "sv"} {
		for _, msg := range []string{"tunnel closed", "host not allowed: evil.example", "spool open: 12 messages waiting"} {
			b.Run(lang+"/"+msg, func(b *testing.B) {
				l := NewLog(io.Discard, Options{Language: lang, Recent: 2})
				defer l.Close()
				f := []Field{Str(KeyTarget, "a.example:443"), Int(KeyBytesUp, 10)}
				b.ReportAllocs()
				for b.Loop() {
					l.Emit(ConnectReceived, msg, f...)
				}
			})
		}
	}
}
