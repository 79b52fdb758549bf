package server

import (
	"bytes"
	"log/slog"
	"testing"
)

// TestStrListLogsAsASlice pins strList to slog's own rendering of a
// []string, in both log formats.
func TestStrListLogsAsASlice(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		list []string
	}{
		{"nil", nil},
		{"empty", []string{}},
		{"one", []string{"registry.my.com/a:1"}},
		{"several", []string{"nginx:latest", "quay.io/prometheus/node-exporter:v1.7.0"}},
		{"quotes and spaces", []string{`a "b"`, "c d", ""}},
		{"HTML and controls", []string{"<a>&b", "x\ny\t"}},
		{"invalid UTF-8", []string{"a\xffb"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, format := range []string{"text", "json"} {
				render := func(v any) string {
					var buf bytes.Buffer
					var h slog.Handler = slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: dropTime})
					if format == "json" {
						h = slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: dropTime})
					}
					slog.New(h).Info("review", "images", v)
					return buf.String()
				}
				if got, want := render(strList(tc.list)), render(tc.list); got != want {
					t.Errorf("%s: got %s, want %s", format, got, want)
				}
			}
		})
	}
}

func dropTime(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

func TestCappedListsAtMostMaxLoggedEachCut(t *testing.T) {
	t.Parallel()
	long := string(bytes.Repeat([]byte("a"), 10_000))
	tests := []struct {
		name  string
		total int
		want  int    // entries
		last  string // the last entry
	}{
		{name: "a few", total: 3, want: 3, last: long[:maxLoggedRef] + "..."},
		{name: "exactly the cap", total: maxLogged, want: maxLogged, last: long[:maxLoggedRef] + "..."},
		{name: "68,000", total: 68_000, want: maxLogged + 1, last: "(and 67980 more)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			calls := 0
			got := capped(tc.total, func(int) string { calls++; return long })
			if len(got) != tc.want || got[len(got)-1] != tc.last || calls > maxLogged {
				t.Errorf("capped(%d) = %d entries ending %.40q after %d calls; want %d ending %.40q, at most %d calls",
					tc.total, len(got), got[len(got)-1], calls, tc.want, tc.last, maxLogged)
			}
		})
	}
}
