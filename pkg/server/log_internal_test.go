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
