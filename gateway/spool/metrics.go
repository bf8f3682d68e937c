package spool

import (
	"bufio"
	"io"
	"strconv"
)

// WriteMetrics writes the storegate_spool_* series in the Prometheus text
// format. The link's series come from link.Tracker.WriteMetrics.
func (s *Spool) WriteMetrics(w io.Writer) error {
	st := s.Status()
	bw := bufio.NewWriter(w)
	gauge := func(name, help string, v float64) {
		bw.WriteString("# HELP " + name + " " + help + "\n# TYPE " + name + " gauge\n" + name + " ")
		bw.WriteString(strconv.FormatFloat(v, 'g', -1, 64) + "\n")
	}
	counter := func(name, help string, labels []string, vs ...uint64) {
		bw.WriteString("# HELP " + name + " " + help + "\n# TYPE " + name + " counter\n")
		for i, v := range vs {
			bw.WriteString(name)
			if labels != nil {
				bw.WriteString("{" + labels[i] + "}")
			}
			bw.WriteString(" " + strconv.FormatUint(v, 10) + "\n")
		}
	}
	avail := 0.0
	if st.Available {
		avail = 1
	}
	gauge("storegate_spool_available", "Whether the spool accepts submissions (0 while its disk fails).", avail)
	gauge("storegate_spool_depth", "Messages waiting for delivery.", float64(st.Depth))
	gauge("storegate_spool_bytes", "Bytes of messages waiting for delivery.", float64(st.Bytes))
	gauge("storegate_spool_max_bytes", "The spool.max_bytes bound.", float64(st.MaxBytes))
	gauge("storegate_spool_oldest_age_seconds", "Age of the oldest waiting message.", st.OldestAgeSeconds)
	gauge("storegate_spool_dead_letters", "Dead letters kept in the spool directory.", float64(st.DeadLetters))
	gauge("storegate_spool_segments", "Segment files on disk.", float64(st.Segments))
	gauge("storegate_spool_disk_bytes", "Bytes in segment files on disk.", float64(st.DiskBytes))
	c := &s.c
	counter("storegate_spool_submitted_total", "Messages accepted (202) after they were on disk.", nil, c.submitted.Load())
	counter("storegate_spool_delivered_total", "Messages delivered (2xx).", nil, c.delivered.Load())
	counter("storegate_spool_retries_total", "Delivery attempts that will be retried (408, 429, 5xx, network).", nil, c.retries.Load())
	counter("storegate_spool_dead_lettered_total", "Messages moved to the dead-letter area.", nil, c.deadLettered.Load())
	counter("storegate_spool_dropped_total", "Messages dropped by the bounds.", []string{`reason="max_age"`, `reason="overflow"`},
		c.droppedAge.Load(), c.droppedOverflow.Load())
	counter("storegate_spool_refused_total", "Submissions refused.",
		[]string{`reason="full"`, `reason="too_large"`, `reason="not_allowed"`, `reason="unavailable"`, `reason="bad_request"`},
		c.refusedFull.Load(), c.refusedLarge.Load(), c.refusedNotAllowed.Load(), c.refusedUnavailable.Load(), c.refusedBad.Load())
	counter("storegate_spool_quarantined_total", "Damaged regions set aside by recovery.", nil, c.quarantined.Load())
	counter("storegate_spool_missing_segments_total", "Segment files recovery found missing.", nil, c.missingSegments.Load())
	if q := st.Storage; q != nil {
		counter("storegate_spool_records_written_total", "Records made durable.", nil, q.Records)
		counter("storegate_spool_commit_batches_total", "Group commits (one write and one fdatasync for many records).", nil, q.Batches)
		counter("storegate_spool_fsyncs_total", "All fsync and fdatasync calls.", nil, q.Syncs)
		counter("storegate_spool_written_bytes_total", "Bytes written to the spool's files.", nil, q.BytesWritten)
		counter("storegate_spool_write_errors_total", "Writes that failed (disk full, I/O error).", nil, q.WriteErrors)
		counter("storegate_spool_segments_deleted_total", "Segments deleted after delivery.", nil, q.SegmentsDeleted)
	}
	return bw.Flush()
}
