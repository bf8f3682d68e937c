package metrics

import (
	"bytes"
	"testing"
)

func TestTextFormat(t *testing.T) {
	var b bytes.Buffer
	m := NewWriter(&b)
	m.Counter("a_total", "Things.\nSecond line \\ too.", 3)
	m.CounterVec("b_total", "By kind.", "kind", []string{"x", `q"uo\te` + "\n"}, []float64{1, 2.5})
	m.GaugeLabels("c_info", "Info.", []string{"source", "sha256"}, []string{"/etc/p.yaml", "ab"}, 1)
	want := `# HELP a_total Things.\nSecond line \\ too.
# TYPE a_total counter
a_total 3
# HELP b_total By kind.
# TYPE b_total counter
b_total{kind="x"} 1
b_total{kind="q\"uo\\te\n"} 2.5
# HELP c_info Info.
# TYPE c_info gauge
c_info{source="/etc/p.yaml",sha256="ab"} 1
`
	if b.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}
