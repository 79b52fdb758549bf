package docs

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// readmes are the READMEs the front page links to; each must exist.
var readmes = []string{"README.md", "examples/README.md", "config/README.md", "hack/README.md"}

var (
	// link is an inline link or image, [text](target), its text free to
	// wrap lines; titles are not used in this repository.
	link = regexp.MustCompile(`!?\[([^\]]*)\]\(([^)\s]*)\)`)
	// codeSpan is inline code, whose brackets are not links.
	codeSpan = regexp.MustCompile("`[^`]*`")
	// heading is an ATX heading; a closing run of '#' needs a space before it.
	heading = regexp.MustCompile(`^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$`)
	// mention is a README named in a comment or script, with its anchor.
	mention = regexp.MustCompile(`(?:[A-Za-z0-9_.-]+/)*README\.md(?:#[A-Za-z0-9_-]+)?`)
)

// anchor is GitHub's anchor for a heading: links become their text, then
// lower case, spaces become '-', and punctuation other than '-' and '_' is
// dropped.
func anchor(text string) string {
	text = link.ReplaceAllString(text, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// doc is a markdown file read for its links and anchors.
type doc struct {
	anchors map[string]bool
	links   []docLink
}

type docLink struct {
	line   int
	target string
}

// parse finds the headings and links of markdown outside fenced code
// blocks (whose lines are blanked, keeping line numbers) and inline code.
func parse(text string) doc {
	d := doc{anchors: map[string]bool{}}
	seen := map[string]int{}
	lines := strings.Split(text, "\n")
	fence := ""
	for i, l := range lines {
		trimmed := strings.TrimLeft(l, " ")
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			lines[i] = ""
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fence, lines[i] = trimmed[:3], ""
			continue
		}
		if m := heading.FindStringSubmatch(l); m != nil {
			a := anchor(codeSpan.ReplaceAllStringFunc(m[2], func(s string) string { return strings.Trim(s, "`") }))
			if n := seen[a]; n > 0 {
				seen[a] = n + 1
				a = fmt.Sprintf("%s-%d", a, n)
			} else {
				seen[a] = 1
			}
			d.anchors[a] = true
		}
	}
	prose := codeSpan.ReplaceAllStringFunc(strings.Join(lines, "\n"), func(s string) string {
		return strings.Repeat("\n", strings.Count(s, "\n")) // keep line numbers
	})
	for _, m := range link.FindAllStringSubmatchIndex(prose, -1) {
		d.links = append(d.links, docLink{line: 1 + strings.Count(prose[:m[0]], "\n"), target: prose[m[4]:m[5]]})
	}
	return d
}

// checker resolves links in the tree under root, reading each target once.
type checker struct {
	root string
	docs map[string]doc
}

func (c *checker) doc(path string) (doc, error) {
	if d, ok := c.docs[path]; ok {
		return d, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return doc{}, err
	}
	d := parse(string(raw))
	c.docs[path] = d
	return d, nil
}

// resolve reports what is wrong with target, a path and optional #anchor
// relative to dir, or "" when it resolves.
func (c *checker) resolve(dir, self, target string) string {
	path, frag, _ := strings.Cut(target, "#")
	file := self
	if path != "" {
		file = filepath.Join(dir, filepath.FromSlash(path))
		if _, err := os.Stat(file); err != nil {
			return fmt.Sprintf("no file %s", path)
		}
	}
	if frag == "" {
		return ""
	}
	if !strings.HasSuffix(file, ".md") {
		return fmt.Sprintf("anchor #%s into %s, which is not markdown", frag, path)
	}
	d, err := c.doc(file)
	if err != nil {
		return err.Error()
	}
	if !d.anchors[frag] {
		if path == "" {
			path = "this file"
		}
		return fmt.Sprintf("no heading with anchor #%s in %s", frag, path)
	}
	return ""
}

// checkMarkdown returns "line: target: problem" for each relative link of
// the markdown file path that does not resolve.
func (c *checker) checkMarkdown(path string) ([]string, error) {
	d, err := c.doc(path)
	if err != nil {
		return nil, err
	}
	var problems []string
	for _, l := range d.links {
		if strings.Contains(l.target, "://") || strings.HasPrefix(l.target, "mailto:") {
			continue
		}
		if p := c.resolve(filepath.Dir(path), path, l.target); p != "" {
			problems = append(problems, fmt.Sprintf("%d: %s: %s", l.line, l.target, p))
		}
	}
	return problems, nil
}

// checkMentions returns "line: mention: problem" for each README that the
// comments or text of a non-markdown file name, relative to the
// repository root or to the file, that does not resolve.
func (c *checker) checkMentions(path string) ([]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var problems []string
	for i, l := range strings.Split(string(raw), "\n") {
		for _, m := range mention.FindAllString(l, -1) {
			p := c.resolve(c.root, "", m)
			if p != "" && c.resolve(filepath.Dir(path), "", m) == "" {
				p = ""
			}
			if p != "" {
				problems = append(problems, fmt.Sprintf("%d: %s: %s", i+1, m, p))
			}
		}
	}
	return problems, nil
}

func TestAnchorFollowsGitHubsRules(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, heading, want string
	}{
		{"words are lower-cased and joined by dashes", "How it fails: closed", "how-it-fails-closed"},
		{"code, parentheses and slashes are dropped", "Policy file (--config)", "policy-file---config"},
		{"dashes and underscores are kept", "make e2e_fast and end-to-end", "make-e2e_fast-and-end-to-end"},
		{"a link is its text", "[Configuration](CONFIGURATION.md)", "configuration"},
		{"letters beyond ASCII are kept", "Über µs", "über-µs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := anchor(tc.heading); got != tc.want {
				t.Errorf("anchor(%q) = %q, want %q", tc.heading, got, tc.want)
			}
		})
	}
}

func TestCheckerReportsEveryLinkThatDoesNotResolve(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("sub/README.md", "# Sub\n\n## Policy file (`--config`) ##\n\n## Twice\n\n## Twice\n")
	write("main.go", "// see sub/README.md#twice-1 and sub/README.md#gone\n")
	write("README.md", strings.Join([]string{
		"# Top", // 1
		"[ok](sub/README.md#policy-file---config)", // 2
		"[ok](#top) [ok](https://x.io/#y) [ok](sub/README.md#twice-1)",
		"[missing](nowhere.md)",  // 4
		"[bad anchor](#nowhere)", // 5
		"[bad anchor](sub/README.md#policy-file)",
		"[wrapped",          // 7
		"text](#also-gone)", // 8, the link starts on 7
		"`[in code](gone.md)`",
		"```",
		"[in a fence](gone.md)",
		"## not a heading",
		"```",
		"[fence heading](#not-a-heading)", // 14
		"[ok](main.go) [not markdown](main.go#L1)",
	}, "\n"))
	c := &checker{root: dir, docs: map[string]doc{}}
	got, err := c.checkMarkdown(filepath.Join(dir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	mentions, err := c.checkMentions(filepath.Join(dir, "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, mentions...)
	want := []string{
		"4: nowhere.md: no file nowhere.md",
		"5: #nowhere: no heading with anchor #nowhere in this file",
		"6: sub/README.md#policy-file: no heading with anchor #policy-file in sub/README.md",
		"7: #also-gone: no heading with anchor #also-gone in this file",
		"14: #not-a-heading: no heading with anchor #not-a-heading in this file",
		"15: main.go#L1: anchor #L1 into main.go, which is not markdown",
		"1: sub/README.md#gone: no heading with anchor #gone in sub/README.md",
	}
	if !slices.Equal(got, want) {
		t.Errorf("got problems\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestEveryREADMELinkResolves(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("the repository root is not two levels up: %v", err)
	}
	for _, r := range readmes {
		if _, err := os.Stat(filepath.Join(root, r)); err != nil {
			t.Errorf("the front page links to %s: %v", r, err)
		}
	}
	c := &checker{root: root, docs: map[string]doc{}}
	var checked int
	err = filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := e.Name()
		if e.IsDir() {
			// hack/docs holds this test, whose fixtures are broken on purpose.
			if path != root && (strings.HasPrefix(name, ".") || name == "_output" || name == "bin" || path == filepath.Join(root, "hack", "docs")) {
				return filepath.SkipDir
			}
			return nil
		}
		var problems []string
		switch ext := filepath.Ext(name); {
		case ext == ".md":
			checked++
			problems, err = c.checkMarkdown(path)
		case ext == ".go" || ext == ".yaml" || ext == ".yml" || ext == ".sh" || name == "Makefile":
			problems, err = c.checkMentions(path)
		}
		rel, _ := filepath.Rel(root, path)
		for _, p := range problems {
			t.Errorf("%s:%s", filepath.ToSlash(rel), p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < len(readmes) {
		t.Errorf("checked %d markdown files, want at least %d", checked, len(readmes))
	}
}
