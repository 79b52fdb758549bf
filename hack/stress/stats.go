package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// outcome is what a scenario's flood measured: how its hostile requests were
// answered, how long each took, and every check that failed. Safe for
// concurrent use.
type outcome struct {
	mu       sync.Mutex
	statuses map[string]int
	times    []time.Duration
	failures []string
	notes    []string
}

func newOutcome() *outcome { return &outcome{statuses: map[string]int{}} }

// answer records one hostile request's end: an HTTP status, or what became
// of it ("closed", "held", "refused"), and how long it took. A zero d is
// counted without a time (it has none, e.g. held to the deadline).
func (o *outcome) answer(status string, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.statuses[status]++
	if d > 0 {
		o.times = append(o.times, d)
	}
}

// fail records a failed check. Identical failures are folded into one line
// when printed (dedupe), so a flood of them stays readable.
func (o *outcome) fail(format string, args ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.failures = append(o.failures, fmt.Sprintf(format, args...))
}

// note records a figure worth printing under the table.
func (o *outcome) note(format string, args ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.notes = append(o.notes, fmt.Sprintf(format, args...))
}

// statusCounts renders the answers as "200×3 413×1", HTTP statuses first.
func statusCounts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s×%d", k, m[k])
	}
	return b.String()
}

// quantile returns the q-quantile (0..1) of ds, nearest rank; 0 when empty.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

// ms renders a duration in milliseconds, or "-" for none.
func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000)
}

func mib(bytes int64) string { return fmt.Sprintf("%.1f", float64(bytes)/(1<<20)) }

// dedupe folds repeated lines into "line (×n)", keeping first-seen order.
func dedupe(lines []string) []string {
	count := map[string]int{}
	var order []string
	for _, l := range lines {
		if count[l] == 0 {
			order = append(order, l)
		}
		count[l]++
	}
	out := make([]string, 0, len(order))
	for _, l := range order {
		if count[l] > 1 {
			l = fmt.Sprintf("%s (×%d)", l, count[l])
		}
		out = append(out, l)
	}
	return out
}
