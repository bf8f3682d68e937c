package spool

import (
	"bufio"
	"io"

	"github.com/storegate/storegate/gateway/metrics"
)

// WriteMetrics writes the storegate_spool_* series in the Prometheus text
// format. The link's series come from link.Tracker.WriteMetrics.
func (s *Spool) WriteMetrics(w io.Writer) error {
	st := s.Status()
	bw := bufio.NewWriter(w)
	m := metrics.NewWriter(bw)
	avail := 0.0
	if st.Available {
		avail = 1
	}
	m.Gauge("storegate_spool_available", "Whether the spool accepts submissions (0 while its disk fails).", avail)
	m.Gauge("storegate_spool_depth", "Messages waiting for delivery.", float64(st.Depth))
	m.Gauge("storegate_spool_bytes", "Bytes of messages waiting for delivery.", float64(st.Bytes))
	m.Gauge("storegate_spool_max_bytes", "The spool.max_bytes bound.", float64(st.MaxBytes))
	m.Gauge("storegate_spool_oldest_age_seconds", "Age of the oldest waiting message.", st.OldestAgeSeconds)
	m.Gauge("storegate_spool_dead_letters", "Dead letters kept in the spool directory.", float64(st.DeadLetters))
	m.Gauge("storegate_spool_dead_letter_bytes", "Bytes of the dead letters kept (bounded by spool.dead_letter_max_bytes).", float64(st.DeadLetterBytes))
	m.Gauge("storegate_spool_segments", "Segment files on disk.", float64(st.Segments))
	m.Gauge("storegate_spool_disk_bytes", "Bytes in segment files on disk.", float64(st.DiskBytes))
	c := &s.c
	n := func(v uint64) float64 { return float64(v) }
	m.Counter("storegate_spool_submitted_total", "Messages accepted (202) after they were on disk.", n(c.submitted.Load()))
	m.Counter("storegate_spool_delivered_total", "Messages delivered (2xx).", n(c.delivered.Load()))
	m.Counter("storegate_spool_retries_total", "Delivery attempts that will be retried (408, 429, 5xx, network).", n(c.retries.Load()))
	m.Counter("storegate_spool_dead_lettered_total", "Messages moved to the dead-letter area.", n(c.deadLettered.Load()))
	m.Counter("storegate_spool_dead_letters_deleted_total", "Oldest dead letters deleted to keep spool.dead_letter_max_bytes.", n(c.deadDeleted.Load()))
	m.CounterVec("storegate_spool_dropped_total", "Messages dropped by the bounds.", "reason",
		[]string{"max_age", "overflow"}, []float64{n(c.droppedAge.Load()), n(c.droppedOverflow.Load())})
	m.CounterVec("storegate_spool_refused_total", "Submissions refused.", "reason",
		[]string{"full", "too_large", "not_allowed", "unavailable", "bad_request"},
		[]float64{n(c.refusedFull.Load()), n(c.refusedLarge.Load()), n(c.refusedNotAllowed.Load()), n(c.refusedUnavailable.Load()), n(c.refusedBad.Load())})
	m.Counter("storegate_spool_quarantined_total", "Damaged regions set aside by recovery.", n(c.quarantined.Load()))
	m.Counter("storegate_spool_missing_segments_total", "Segment files recovery found missing.", n(c.missingSegments.Load()))
	if q := st.Storage; q != nil {
		m.Counter("storegate_spool_records_written_total", "Records made durable.", n(q.Records))
		m.Counter("storegate_spool_commit_batches_total", "Group commits (one write and one fdatasync for many records).", n(q.Batches))
		m.Counter("storegate_spool_fsyncs_total", "All fsync and fdatasync calls.", n(q.Syncs))
		m.Counter("storegate_spool_written_bytes_total", "Bytes written to the spool's files.", n(q.BytesWritten))
		m.Counter("storegate_spool_write_errors_total", "Writes that failed (disk full, I/O error).", n(q.WriteErrors))
		m.Counter("storegate_spool_segments_deleted_total", "Segments deleted after delivery.", n(q.SegmentsDeleted))
	}
	return bw.Flush()
}
