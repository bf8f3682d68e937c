# Reads `go test -bench` output and prints, per benchmark family, the median of
# each variant and its ratio to the "direct" variant measured in the same run.
# Throughput benchmarks compare MB/s; the others compare operations per second.
/^Benchmark/ {
	name = $1
	sub(/-[0-9]+$/, "", name)
	n = split(name, parts, "/")
	via = parts[n]
	family = parts[1]
	for (i = 2; i < n; i++) family = family "/" parts[i]
	val = ""
	for (i = 2; i <= NF; i++) {
		if ($i == "MB/s") { val = $(i-1); unit = "MB/s" }
	}
	if (val == "") {
		for (i = 2; i <= NF; i++) if ($i == "ns/op") { val = 1e9 / $(i-1); unit = "ops/s" }
	}
	if (val == "") next
	key = family SUBSEP via
	count[key]++
	vals[key, count[key]] = val
	units[family] = unit
	if (!(family in seen)) { seen[family] = 1; order[++nf] = family }
	if (!((family, via) in vseen)) { vseen[family, via] = 1; vias[family] = vias[family] " " via }
}
function median(key,   m, i, j, t, a) {
	m = count[key]
	for (i = 1; i <= m; i++) a[i] = vals[key, i]
	for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
}
END {
	if (nf == 0) exit
	printf "\n%-36s %-10s %14s %8s\n", "benchmark (median)", "via", "value", "ratio"
	for (f = 1; f <= nf; f++) {
		fam = order[f]
		if (!((fam, "direct") in vseen)) continue
		base = median(fam SUBSEP "direct")
		nv = split(vias[fam], vl, " ")
		for (v = 1; v <= nv; v++) {
			m = median(fam SUBSEP vl[v])
			printf "%-36s %-10s %9.1f %-5s %7.2fx\n", fam, vl[v], m, units[fam], m / base
		}
	}
}
