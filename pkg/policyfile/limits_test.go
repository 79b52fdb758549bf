package policyfile_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/pkg/policyfile"
)

const header = "apiVersion: imagegate.dev/v1alpha1\nkind: ImagePolicy\n"

// aliasBomb is a policy whose default rule lists n registries under an
// anchor and whose rules alias that list: m rules written once each, or,
// with bomb, one rule aliased m times, so a file of O(n+m) bytes expands to
// O(n·m) nodes.
func aliasBomb(n, m int, bomb bool) []byte {
	var b strings.Builder
	b.WriteString(header + "default:\n  allowedRegistries: &l [")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "r%d.example.com", i)
	}
	b.WriteString("]\nrules:\n")
	for i := range m {
		switch {
		case !bomb:
			fmt.Fprintf(&b, "  - {name: r%d, namespaces: [ns%d], allowedRegistries: *l}\n", i, i)
		case i == 0:
			b.WriteString("  - &r {name: a, namespaces: [a], allowedRegistries: *l}\n")
		default:
			b.WriteString("  - *r\n")
		}
	}
	return []byte(b.String())
}

// Aliases may add at most 10,000 nodes to a file, counted before anything
// walks the expanded tree: a file of kilobytes that expands to millions is
// refused at once, naming the first alias, and reuse on a human scale loads.
func TestAliasesAreBounded(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		data []byte
		want string // the whole error; "" means the file loads
	}{
		{
			name: "a 25 KB file that expands to a million nodes is refused",
			data: aliasBomb(1000, 1000, true),
			want: "p.yaml:6: the policy file expands to 1009011 nodes through YAML aliases (the file itself has 2018); imagegate lets aliases add at most 10000: write the lists out or use fewer aliases",
		},
		{
			name: "a list of 100 in 100 rules adds 10,000 nodes and loads",
			data: aliasBomb(100, 100, false),
		},
		{
			name: "a list of 100 in 101 rules adds 10,100 nodes and is refused",
			data: aliasBomb(100, 101, false),
			want: "p.yaml:6: the policy file expands to 11019 nodes through YAML aliases (the file itself has 919); imagegate lets aliases add at most 10000: write the lists out or use fewer aliases",
		},
		{
			name: "nested aliases outside the schema are counted too",
			data: []byte(header + "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n" +
				"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"),
			want: "p.yaml:4: the policy file expands to 123465 nodes through YAML aliases (the file itself has 65); imagegate lets aliases add at most 10000: write the lists out or use fewer aliases",
		},
		{
			name: "a list that aliases itself is refused, not followed",
			data: []byte(header + "default:\n  allowedRegistries: &l [registry.my.com, *l]\n"),
			want: "p.yaml:4: the policy file expands to at least 1099511627776 nodes through YAML aliases (the file itself has 11); imagegate lets aliases add at most 10000: write the lists out or use fewer aliases",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l, err := policyfile.Parse("p.yaml", tc.data, base, policyfile.Overrides{})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got error %v, want the file to load", err)
			case tc.want == "":
				if got := len(l.Spec.Rules[len(l.Spec.Rules)-1].AllowedRegistries); got != 100 {
					t.Errorf("got %d registries in the last rule, want the aliased 100", got)
				}
			case err == nil:
				t.Fatalf("got policy %s, want error %s", l.Hash, tc.want)
			case err.Error() != tc.want:
				t.Errorf("got error\n%s\nwant\n%s", err, tc.want)
			}
		})
	}
}

// A broken file reports its first 20 errors and counts the rest, whichever
// stage finds them, so 40,000 broken entries (a 1 MiB file) cost no more to report than
// to read.
func TestErrorsAreCapped(t *testing.T) {
	t.Parallel()
	repeat := func(format string, n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, format, i)
		}
		return b.String()
	}
	tests := []struct {
		name      string
		data      string
		wantFirst string // the first error
		wantLast  string // the line after the 20th
	}{
		{
			name:      "unknown fields",
			data:      header + "rules:\n" + repeat("  - {name: r%d, namespaces: [a], allowedRegistry: [x]}\n", 25),
			wantFirst: `p.yaml:4: unknown field "allowedRegistry" in rules[0]; known fields: name, namespaces, allowedRegistries, rejectLatest, requireDigest, requireFullyQualified, exemptImages, deniedRepositories, mode, breakGlass, rewrites, pinDigests`,
			wantLast:  "p.yaml: … and 5 more errors",
		},
		{
			name:      "values of the wrong type",
			data:      header + "default:\n  allowedRegistries:\n" + repeat("    - {r%d: x}\n", 30),
			wantFirst: "p.yaml:5: default.allowedRegistries[0]: cannot unmarshal !!map into string",
			wantLast:  "p.yaml: … and 10 more errors",
		},
		{
			name:      "invalid entries",
			data:      header + "default:\n  allowedRegistries:\n" + repeat("    - bad entry %d\n", 40_000),
			wantFirst: `p.yaml:5: default.allowedRegistries[0]: registry entry "bad entry 0": not a valid registry host[:port]`,
			wantLast:  "p.yaml: … and 39980 more errors",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := policyfile.Parse("p.yaml", []byte(tc.data), base, policyfile.Overrides{})
			if err == nil {
				t.Fatal("got no error, want many")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != 21 || lines[0] != tc.wantFirst || lines[20] != tc.wantLast {
				t.Errorf("got %d lines, first %q, last %q; want 21, first %q, last %q", len(lines), lines[0], lines[len(lines)-1], tc.wantFirst, tc.wantLast)
			}
		})
	}
}
