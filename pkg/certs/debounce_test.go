package certs

import (
	"reflect"
	"testing"
	"time"
)

func TestDebouncerSettlesButNeverWaitsPastTheMaximum(t *testing.T) {
	t.Parallel()
	const ms = time.Millisecond
	tests := []struct {
		name string
		// steps are event times, or -1 for the reload firing, in ms.
		steps []time.Duration
		// want is the reload time each event asks for, in ms.
		want []time.Duration
	}{
		{name: "one event settles", steps: []time.Duration{0}, want: []time.Duration{100}},
		{name: "a burst settles after its last event", steps: []time.Duration{0, 30, 60}, want: []time.Duration{100, 130, 160}},
		{name: "a stream is cut off at the maximum wait", steps: []time.Duration{0, 500, 850, 950, 990}, want: []time.Duration{100, 600, 950, 1000, 1000}},
		{name: "an event after the maximum wait reloads at once", steps: []time.Duration{0, 1200}, want: []time.Duration{100, 1000}},
		{name: "a reload starts a new window", steps: []time.Duration{0, 950, -1, 1100, 2050}, want: []time.Duration{100, 1000, 1200, 2100}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			d := debouncer{settle: 100 * ms, maxWait: time.Second}
			var got []time.Duration
			for _, at := range tc.steps {
				if at < 0 {
					d.fired()
					continue
				}
				got = append(got, d.event(start.Add(at*ms)).Sub(start)/ms)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got reloads at %v ms, want %v ms", got, tc.want)
			}
		})
	}
}

func TestRelevantEventsNameTheFilesOrTheVolumeLinks(t *testing.T) {
	t.Parallel()
	relevant := relevantTo("/vol/tls.crt", "/vol/tls.key", "", "ca/ca.crt")
	tests := []struct {
		// event is the name fsnotify gives: the watched directory joined
		// with the file's name.
		event string
		want  bool
	}{
		{event: "/vol/tls.crt", want: true},
		{event: "/vol/tls.key", want: true},
		{event: "/vol/..data", want: true},
		{event: "/vol/..data_tmp", want: true},
		{event: "ca/ca.crt", want: true},
		{event: "./ca/ca.crt", want: true},
		{event: "ca/..data", want: true},
		{event: "/vol/noise.log", want: false},
		{event: "/vol/..2025_01_01_00_00_00.000000001", want: false},
		{event: "/vol/ca.crt", want: false},
		{event: "/other/tls.crt", want: false},
		{event: "/vol", want: false},
	}
	for _, tc := range tests {
		t.Run(tc.event, func(t *testing.T) {
			t.Parallel()
			if got := relevant(tc.event); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
