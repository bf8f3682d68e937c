// Package metrics writes counters and gauges in the Prometheus text
// exposition format (version 0.0.4) without pulling in a client library.
package metrics

import (
	"io"
	"strconv"
	"strings"
)

// Writer writes one scrape. Errors of the underlying writer are ignored: a
// scrape that fails halfway is retried by the scraper.
type Writer struct {
	w io.Writer
	b []byte
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

func (m *Writer) header(name, help, typ string) {
	m.b = append(m.b[:0], "# HELP "...)
	m.b = append(m.b, name...)
	m.b = append(m.b, ' ')
	m.b = append(m.b, escapeHelp(help)...)
	m.b = append(m.b, "\n# TYPE "...)
	m.b = append(m.b, name...)
	m.b = append(m.b, ' ')
	m.b = append(m.b, typ...)
	m.b = append(m.b, '\n')
}

func (m *Writer) sample(name string, labels, values []string, v float64) {
	m.b = append(m.b, name...)
	if len(labels) > 0 {
		m.b = append(m.b, '{')
		for i, l := range labels {
			if i > 0 {
				m.b = append(m.b, ',')
			}
			m.b = append(m.b, l...)
			m.b = append(m.b, `="`...)
			m.b = append(m.b, escapeLabel(values[i])...)
			m.b = append(m.b, '"')
		}
		m.b = append(m.b, '}')
	}
	m.b = append(m.b, ' ')
	m.b = strconv.AppendFloat(m.b, v, 'g', -1, 64)
	m.b = append(m.b, '\n')
}

func (m *Writer) flush() { _, _ = m.w.Write(m.b) }

// Counter writes a counter without labels.
func (m *Writer) Counter(name, help string, v float64) {
	m.header(name, help, "counter")
	m.sample(name, nil, nil, v)
	m.flush()
}

// Gauge writes a gauge without labels.
func (m *Writer) Gauge(name, help string, v float64) {
	m.header(name, help, "gauge")
	m.sample(name, nil, nil, v)
	m.flush()
}

// CounterVec writes a counter with one label, one sample per value.
func (m *Writer) CounterVec(name, help, label string, values []string, vs []float64) {
	m.header(name, help, "counter")
	for i := range values {
		m.sample(name, []string{label}, values[i:i+1], vs[i])
	}
	m.flush()
}

// GaugeLabels writes one gauge sample with several labels.
func (m *Writer) GaugeLabels(name, help string, labels, values []string, v float64) {
	m.header(name, help, "gauge")
	m.sample(name, labels, values, v)
	m.flush()
}

var helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
var labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }
