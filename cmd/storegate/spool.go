package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/storegate/storegate/gateway/spool/queue"
)

// cmdSpool is `storegate spool check DIR [--json]`: an offline, read-only
// verification of a spool directory. Exit 0: clean (a torn tail from a crash
// counts as clean, since recovery truncates it); 1: damage found (recovery
// would still start and set it aside); 2: usage or an unreadable directory.
func cmdSpool(_ context.Context, args []string, s stdio) int {
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprintln(s.Err, "usage: storegate spool check DIR [--json]")
		return 2
	}
	fs := flag.NewFlagSet("spool check", flag.ContinueOnError)
	fs.SetOutput(s.Err)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	// Accept the flag before or after DIR.
	var dir string
	rest := args[1:]
	for len(rest) > 0 {
		if err := fs.Parse(rest); err != nil {
			return 2
		}
		rest = fs.Args()
		if len(rest) > 0 {
			if dir != "" {
				fmt.Fprintln(s.Err, "usage: storegate spool check DIR [--json]")
				return 2
			}
			dir, rest = rest[0], rest[1:]
		}
	}
	if dir == "" {
		fmt.Fprintln(s.Err, "usage: storegate spool check DIR [--json]")
		return 2
	}
	rep, err := queue.Check(dir)
	if err != nil {
		fmt.Fprintf(s.Err, "storegate: spool check %s: %v\n", dir, err)
		return 2
	}
	dead := countFiles(filepath.Join(dir, "dead"), ".json")
	quarantined := countFiles(filepath.Join(dir, "quarantine"), "")
	problems := rep.Problems()
	if *asJSON {
		out := struct {
			*queue.Report
			DeadLetters     int      `json:"dead_letters"`
			QuarantineFiles int      `json:"quarantine_files"`
			Problems        []string `json:"problems"`
		}{rep, dead, quarantined, problems}
		if out.Problems == nil {
			out.Problems = []string{}
		}
		b, _ := json.MarshalIndent(out, "", "  ")
		fmt.Fprintln(s.Out, string(b))
	} else {
		w := s.Out
		fmt.Fprintf(w, "spool %s\n", dir)
		fmt.Fprintf(w, "metadata: %s\n", rep.Meta)
		var size int64
		for _, sg := range rep.Segments {
			size += sg.Size
		}
		fmt.Fprintf(w, "segments: %d (%d bytes); records: %d; waiting for delivery: %d (%d bytes)\n",
			len(rep.Segments), size, rep.Records, rep.Pending, rep.PendingSize)
		for _, sg := range rep.Segments {
			note := ""
			if sg.TailTorn {
				note = fmt.Sprintf("; torn tail of %d bytes from the last crash (recovery truncates it)", sg.Tail.Len())
			}
			fmt.Fprintf(w, "  segment %d: %d bytes, %d records, %d waiting%s\n", sg.Num, sg.Size, sg.Records, sg.Pending, note)
		}
		if len(rep.Removed) > 0 {
			fmt.Fprintf(w, "leftover deleted segments (recovery removes them): %v\n", rep.Removed)
		}
		if len(rep.Adopted) > 0 && rep.Meta == "ok" {
			fmt.Fprintf(w, "segments not yet in the metadata (recovery adopts them): %v\n", rep.Adopted)
		}
		fmt.Fprintf(w, "dead letters: %d; quarantine files: %d\n", dead, quarantined)
		if len(problems) == 0 {
			fmt.Fprintln(w, "problems: none")
		} else {
			fmt.Fprintf(w, "problems (%d):\n  %s\n", len(problems), strings.Join(problems, "\n  "))
		}
	}
	if len(problems) > 0 {
		return 1
	}
	return 0
}

func countFiles(dir, suffix string) int {
	es, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range es {
		if !e.IsDir() && strings.HasSuffix(e.Name(), suffix) && !strings.HasSuffix(e.Name(), ".tmp") {
			n++
		}
	}
	return n
}
