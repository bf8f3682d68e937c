package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// measurement is one figure; each is written as one JSON line.
type measurement struct {
	Run     string  `json:"run"`
	Time    string  `json:"time"`
	Rep     int     `json:"rep"` // 0 for medians and one-off figures
	Subject string  `json:"subject"`
	Metric  string  `json:"metric"`
	Value   float64 `json:"value"`
	Unit    string  `json:"unit"`
	Errors  int     `json:"errors,omitempty"`
	Stat    string  `json:"stat"` // "sample" (one repetition) or "median"
}

// MarshalJSON writes NaN (a figure that could not be taken) as null.
func (m measurement) MarshalJSON() ([]byte, error) {
	type plain measurement
	if math.IsNaN(m.Value) || math.IsInf(m.Value, 0) {
		return json.Marshal(struct {
			plain
			Value *float64 `json:"value"`
		}{plain: plain(m)})
	}
	return json.Marshal(plain(m))
}

type key struct{ subject, metric string }

// medians groups samples by subject and metric and takes the median of each.
func medians(ms []measurement) map[key]measurement {
	vals := map[key][]float64{}
	first := map[key]measurement{}
	errs := map[key][]float64{}
	var order []key
	for _, m := range ms {
		k := key{m.Subject, m.Metric}
		if _, ok := first[k]; !ok {
			first[k] = m
			order = append(order, k)
		}
		vals[k] = append(vals[k], m.Value)
		errs[k] = append(errs[k], float64(m.Errors))
	}
	out := make(map[key]measurement, len(order))
	for _, k := range order {
		m := first[k]
		m.Rep, m.Stat = 0, "median"
		m.Value = median(vals[k])
		m.Errors = int(median(errs[k]))
		out[k] = m
	}
	return out
}

// row is one line of the table: a metric, which storegate variant fills the
// storegate column, and whether higher or lower is better.
type row struct {
	label     string
	metric    string
	storegate string
	squid     string // which squid fills the squid column; "" means squid
	higher    bool
	count     bool // an error count: no ratios
}

// tableRows lists the table in order for the given idle-tunnel levels.
func tableRows(levels []int) []row {
	rs := []row{}
	for _, n := range []int{1, 8} {
		for _, d := range []string{"down", "up"} {
			rs = append(rs, row{label: fmt.Sprintf("bulk %s, %d tunnel(s), MB/s", d, n), metric: fmt.Sprintf("bulk_%s_%d", d, n), storegate: subjStoregate, higher: true})
		}
	}
	for _, n := range []int{1, 8} {
		for _, d := range []string{"down", "up"} {
			rs = append(rs, row{label: fmt.Sprintf("  proxy CPU s/GB, %s %d", d, n), metric: fmt.Sprintf("cpu_gb_%s_%d", d, n), storegate: subjStoregate})
		}
	}
	rs = append(rs,
		row{label: "bulk down in TLS 1.3, inspect off, MB/s", metric: "bulk_tls_down_1", storegate: subjStoregate, higher: true},
		row{label: "  proxy CPU s/GB", metric: "cpu_gb_tls_down_1", storegate: subjStoregate},
		row{label: "bulk down in TLS 1.3, inspect on, MB/s", metric: "bulk_tls_down_1", storegate: subjInspect, higher: true},
		row{label: "  proxy CPU s/GB", metric: "cpu_gb_tls_down_1", storegate: subjInspect},
	)
	// Over TLS to the proxy: storegate's tls_listener against squid's
	// https_port (direct: one TLS session with the upstream).
	for _, d := range []string{"down", "up"} {
		rs = append(rs,
			row{label: "bulk " + d + " over TLS to the proxy, 1 tunnel, MB/s", metric: "bulk_viatls_" + d + "_1", storegate: subjStoregateTLS, squid: subjSquidTLS, higher: true},
			row{label: "  proxy CPU s/GB", metric: "cpu_gb_viatls_" + d + "_1", storegate: subjStoregateTLS, squid: subjSquidTLS},
		)
	}
	rate := func(title, metric, sg, sq string) {
		rs = append(rs,
			row{label: title + ", conn/s", metric: metric, storegate: sg, squid: sq, higher: true},
			row{label: "  CONNECT-to-200 p50 ms", metric: metric + "_p50", storegate: sg, squid: sq},
			row{label: "  CONNECT-to-200 p90 ms", metric: metric + "_p90", storegate: sg, squid: sq},
			row{label: "  CONNECT-to-200 p99 ms", metric: metric + "_p99", storegate: sg, squid: sq},
			row{label: "  proxy CPU s/1000 conns", metric: metric + "_cpu_1k", storegate: sg, squid: sq},
			row{label: "  errors", metric: metric + "_errors", storegate: sg, squid: sq, count: true},
		)
	}
	rate("CONNECT+echo, plain", "rate_plain", subjStoregate, "")
	rate("CONNECT+TLS1.3+echo, inspect off", "rate_tls", subjStoregate, "")
	rate("CONNECT+TLS1.3+echo, inspect on", "rate_tls", subjInspect, "")
	rate("TLS to the proxy+CONNECT+echo", "rate_viatls", subjStoregateTLS, subjSquidTLS)
	rs = append(rs,
		row{label: "idle RSS MiB", metric: "rss_idle", storegate: subjStoregate},
		row{label: "  anonymous (heap, stacks) MiB", metric: "rss_idle_anon", storegate: subjStoregate},
		row{label: "  mapped files (executable) MiB", metric: "rss_idle_file", storegate: subjStoregate},
		row{label: "idle RSS MiB, inspect on", metric: "rss_idle", storegate: subjInspect},
		row{label: "idle RSS MiB, TLS listener on", metric: "rss_idle", storegate: subjStoregateTLS, squid: subjSquidTLS},
	)
	for _, n := range levels {
		l := strconv.Itoa(n)
		rs = append(rs,
			row{label: "RSS with " + l + " idle tunnels MiB", metric: "rss_" + l, storegate: subjStoregate},
			row{label: "  KiB per tunnel @" + l, metric: "tunnel_kib_" + l, storegate: subjStoregate},
			row{label: "  errors @" + l, metric: "tunnel_errors_" + l, storegate: subjStoregate, count: true},
			row{label: "  fds per tunnel @" + l, metric: "tunnel_fds_" + l, storegate: subjStoregate},
			row{label: "  KiB per tunnel @" + l + ", TLS, inspect on", metric: "tunnel_kib_" + l, storegate: subjInspect},
			row{label: "  errors @" + l + ", TLS, inspect on", metric: "tunnel_errors_" + l, storegate: subjInspect, count: true},
		)
	}
	rs = append(rs,
		row{label: "fds still open 5 s after all tests", metric: "fds_leftover", storegate: subjStoregate, count: true},
		row{label: "  with inspection on", metric: "fds_leftover", storegate: subjInspect, count: true},
	)
	rs = append(rs, row{label: "log/event bytes per tunnel (events on)", metric: "log_bytes_per_tunnel", storegate: subjStoregate})
	rs = append(rs, row{label: "binary MiB (peers: executable only)", metric: "binary", storegate: subjStoregate})
	return rs
}

// formatTable prints the medians with one column per subject and the
// storegate ratios. Missing figures print as "-".
func formatTable(w io.Writer, rows []row, med map[key]measurement) {
	cols := []string{subjDirect, subjStoregate, subjTinyproxy, subjSquid, subjRelay}
	get := func(subject, metric string) float64 {
		if m, ok := med[key{subject, metric}]; ok {
			return m.Value
		}
		return math.NaN()
	}
	labelW := len("metric")
	for _, r := range rows {
		labelW = max(labelW, len(r.label))
	}
	header := fmt.Sprintf("%-*s %10s %10s %10s %10s %10s  %9s %9s %9s %9s  %s", labelW, "metric",
		"direct", "storegate", "tinyproxy", "squid", "go-relay", "sg/direct", "sg/tiny", "sg/squid", "sg/relay", "better")
	fmt.Fprintln(w, header)
	fmt.Fprintln(w, strings.Repeat("-", len(header)))
	for _, r := range rows {
		vals := make([]float64, len(cols))
		any := false
		for i, c := range cols {
			subj := c
			switch {
			case c == subjStoregate:
				subj = r.storegate
			case c == subjSquid && r.squid != "":
				subj = r.squid
			case r.squid != "" && c != subjDirect:
				vals[i] = math.NaN() // the other peers have no TLS listener
				continue
			}
			vals[i] = get(subj, r.metric)
			any = any || !math.IsNaN(vals[i])
		}
		if !any {
			continue
		}
		better := "lower"
		if r.higher {
			better = "higher"
		}
		line := fmt.Sprintf("%-*s %10s %10s %10s %10s %10s", labelW, r.label,
			num(vals[0]), num(vals[1]), num(vals[2]), num(vals[3]), num(vals[4]))
		if r.count {
			fmt.Fprintln(w, line)
			continue
		}
		fmt.Fprintf(w, "%s  %9s %9s %9s %9s  %s\n", line,
			ratioStr(ratio(vals[1], vals[0])), ratioStr(ratio(vals[1], vals[2])), ratioStr(ratio(vals[1], vals[3])),
			ratioStr(ratio(vals[1], vals[4])), better)
	}
}

// num prints a figure with about three significant digits.
func num(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "-"
	case v == 0:
		return "0"
	case a >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

func ratioStr(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "-"
	}
	return strconv.FormatFloat(r, 'f', 2, 64) + "x"
}

// writeJSONLines writes one object per line.
func writeJSONLines(w io.Writer, ms []measurement) error {
	enc := json.NewEncoder(w)
	for _, m := range ms {
		if err := enc.Encode(m); err != nil {
			return err
		}
	}
	return nil
}

// target is one of issue 3's goals, judged on the medians of this run.
type target struct {
	goal     string
	measured string
	met      string // "met", "MISSED" or "n/a" (a figure is missing)
}

// targets judges the goals of issue 3 against the medians. Every goal is
// listed, met or not; one whose figures are missing says n/a.
func targets(med map[key]measurement, levels []int) []target {
	get := func(subject, metric string) float64 {
		if m, ok := med[key{subject, metric}]; ok {
			return m.Value
		}
		return math.NaN()
	}
	var out []target
	judge := func(goal string, v float64, ok bool, measured string) {
		t := target{goal: goal, measured: measured, met: "n/a"}
		if !math.IsNaN(v) {
			t.met = "MISSED"
			if ok {
				t.met = "met"
			}
		}
		out = append(out, t)
	}
	atLeast := func(goal string, a, b, want float64) {
		r := ratio(a, b)
		judge(goal, r, r >= want, ratioStr(r))
	}
	sg, sgi, tp, sq, dir := subjStoregate, subjInspect, subjTinyproxy, subjSquid, subjDirect
	atLeast("single-tunnel download >= 0.8x direct", get(sg, "bulk_down_1"), get(dir, "bulk_down_1"), 0.8)
	atLeast("single-tunnel upload >= 0.8x direct", get(sg, "bulk_up_1"), get(dir, "bulk_up_1"), 0.8)
	for _, d := range []string{"down_1", "up_1", "down_8", "up_8"} {
		v := get(sg, "cpu_gb_"+d)
		judge("proxy CPU per GB <= 0.2 s ("+strings.Replace(d, "_", ", ", 1)+" tunnels)", v, v <= 0.2, num(v)+" s")
	}
	atLeast("CONNECT rate >= 1.1x tinyproxy", get(sg, "rate_plain"), get(tp, "rate_plain"), 1.1)
	atLeast("CONNECT rate >= 1.25x squid", get(sg, "rate_plain"), get(sq, "rate_plain"), 1.25)
	cpu := get(sg, "rate_plain_cpu_1k")
	judge("CPU per 1,000 connections <= 0.06 s", cpu, cpu <= 0.06, num(cpu)+" s")
	p99, tp99, sq99 := get(sg, "rate_plain_p99"), get(tp, "rate_plain_p99"), get(sq, "rate_plain_p99")
	judge("CONNECT-to-200 p99 below both peers", p99+tp99+sq99, p99 < tp99 && p99 < sq99,
		fmt.Sprintf("%s ms vs %s (tinyproxy), %s (squid)", num(p99), num(tp99), num(sq99)))
	atLeast("TLS 1.3 inside, inspection on: rate >= 1.1x squid", get(sgi, "rate_tls"), get(sq, "rate_tls"), 1.1)
	idle := get(sg, "rss_idle")
	judge("idle RSS <= 8 MiB", idle, idle <= 8, num(idle)+" MiB")
	for _, n := range levels {
		l := strconv.Itoa(n)
		v := get(sg, "tunnel_kib_"+l)
		judge("RSS per open idle tunnel <= 12 KiB (@"+l+")", v, v <= 12, num(v)+" KiB")
	}
	e := get(sg, "tunnel_errors_10000")
	held := num(e) + " errors"
	if math.IsNaN(e) {
		// Each tunnel holds two descriptors in the proxy and two in the harness.
		held = "not measured here (needs -tunnels ...,10000 and RLIMIT_NOFILE >= 20512; make bench-tunnels-vm measures it in a guest)"
	}
	judge("10,000 open tunnels held without errors", e, e == 0, held)
	rate, best := get(sg, "rate_plain"), math.Max(get(tp, "rate_plain"), get(sq, "rate_plain"))
	judge("events on: CONNECT rate not below either peer", rate+best, rate >= best,
		fmt.Sprintf("%s vs best peer %s conn/s", num(rate), num(best)))
	return out
}

// formatTargets prints the goals with their verdicts.
func formatTargets(w io.Writer, ts []target) {
	width := 0
	for _, t := range ts {
		width = max(width, len(t.goal))
	}
	fmt.Fprintln(w, "targets (issue 3), storegate in this run:")
	for _, t := range ts {
		fmt.Fprintf(w, "  %-6s  %-*s  %s\n", t.met, width, t.goal, t.measured)
	}
}

// readMedians reads the median lines of a JSON-lines file written by a run.
func readMedians(r io.Reader) (map[key]measurement, error) {
	dec := json.NewDecoder(r)
	out := map[key]measurement{}
	for line := 1; ; line++ {
		var m struct {
			Meta    json.RawMessage `json:"meta"`
			Subject string          `json:"subject"`
			Metric  string          `json:"metric"`
			Value   *float64        `json:"value"`
			Unit    string          `json:"unit"`
			Stat    string          `json:"stat"`
		}
		if err := dec.Decode(&m); err == io.EOF {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("object %d: %w", line, err)
		}
		if m.Meta != nil || m.Stat != "median" || m.Value == nil {
			continue
		}
		out[key{m.Subject, m.Metric}] = measurement{Subject: m.Subject, Metric: m.Metric, Value: *m.Value, Unit: m.Unit, Stat: m.Stat}
	}
}

// formatCompare prints the medians two runs share, old and new, with new/old.
func formatCompare(w io.Writer, old, cur map[key]measurement) {
	var keys []key
	for k := range cur {
		if _, ok := old[k]; ok {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b key) int {
		if c := strings.Compare(a.subject, b.subject); c != 0 {
			return c
		}
		return strings.Compare(a.metric, b.metric)
	})
	fmt.Fprintf(w, "%-18s %-24s %12s %12s %9s  %s\n", "subject", "metric", "old", "new", "new/old", "unit")
	for _, k := range keys {
		o, n := old[k].Value, cur[k].Value
		fmt.Fprintf(w, "%-18s %-24s %12s %12s %9s  %s\n", k.subject, k.metric, num(o), num(n), ratioStr(ratio(n, o)), cur[k].Unit)
	}
}
