package console

import (
	"strings"
	"testing"
)

func TestEditor(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		lines []string
		echo  string
	}{
		{"cr", "status\r", []string{"status"}, "status"},
		{"lf", "status\n", []string{"status"}, "status"},
		{"crlf is one line end", "a\r\nb\r\n", []string{"a", "b"}, "ab"},
		{"cr cr is two", "a\r\r", []string{"a", ""}, "a"},
		{"lf cr is two", "a\n\r", []string{"a", ""}, "a"},
		{"backspace", "ab\x08c\r", []string{"ac"}, "ab\b \bc"},
		{"delete", "ab\x7fc\r", []string{"ac"}, "ab\b \bc"},
		{"backspace on empty", "\x08\x7fa\r", []string{"a"}, "a"},
		{"ctrl-u", "abc\x15d\r", []string{"d"}, "abc\b \b\b \b\b \bd"},
		{"csi arrow", "\x1b[Aa\x1b[1;5Db\r", []string{"ab"}, "ab"},
		{"ss3 function key", "\x1bOPa\r", []string{"a"}, "a"},
		{"alt-x", "\x1bxa\r", []string{"a"}, "a"},
		{"csi bounded", "\x1b[" + strings.Repeat("1", 30) + "\r", []string{strings.Repeat("1", 30-maxEscape+2)}, strings.Repeat("1", 30-maxEscape+2)},
		{"nul and 8-bit ignored", "a\x00\xff\x80b\r", []string{"ab"}, "ab"},
		{"tab ignored", "a\tb\r", []string{"ab"}, "ab"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := editor{max: 64}
			var lines []string
			var echo strings.Builder
			for i := 0; i < len(tc.in); i++ {
				a := e.key(tc.in[i])
				echo.WriteString(a.echo)
				if a.done {
					lines = append(lines, a.line)
				}
			}
			if strings.Join(lines, "|") != strings.Join(tc.lines, "|") || len(lines) != len(tc.lines) {
				t.Errorf("lines %q, want %q", lines, tc.lines)
			}
			if echo.String() != tc.echo {
				t.Errorf("echo %q, want %q", echo.String(), tc.echo)
			}
		})
	}
}

func TestEditorTooLong(t *testing.T) {
	e := editor{max: 4}
	var got []action
	for _, c := range []byte("abcdefg\rok\r") {
		if a := e.key(c); a.done || a.tooLong > 0 || a.echo == bell {
			got = append(got, a)
		}
	}
	if len(got) != 3 || got[0].echo != bell || got[1].tooLong == 0 || !got[2].done || got[2].line != "ok" {
		t.Fatalf("got %+v", got)
	}
}
