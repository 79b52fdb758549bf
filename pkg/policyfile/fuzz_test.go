package policyfile_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/policyfile"
)

// FuzzParse feeds arbitrary files to the loader: it never panics, every
// error names the file, and a policy it accepts judges without panicking
// and never allows an image that does not parse.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, name := range append(files, examplePolicy) {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, "team-a", "nginx:1.25")
	}
	f.Add(aliasBomb(1000, 1000, true), "a", "r1.example.com/app:1") // refused before it expands
	f.Fuzz(func(t *testing.T, data []byte, namespace, image string) {
		l, err := policyfile.Parse("p.yaml", data, base, policyfile.Overrides{})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "p.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		d := l.Policy.Evaluate(policy.Input{Namespace: namespace, Images: []policy.Image{{Ref: image}}})
		if _, perr := policy.Normalize(image); perr != nil && d.Allowed && d.Outcome != policy.OutcomeWarned {
			t.Fatalf("allowed unparsable %q: %s", image, d.Outcome)
		}
	})
}
