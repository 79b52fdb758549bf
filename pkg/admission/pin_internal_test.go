package admission

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/distribution/reference"
)

// parsedDigest is how the mutating webhook checked a registry's digest
// before checkDigest: ref@digest parsed in full, and carrying exactly that
// digest. It is the oracle checkDigest is held to.
func parsedDigest(ref, digest string) error {
	named, err := reference.ParseNormalizedNamed(ref + "@" + digest)
	if err != nil {
		return err
	}
	if d, ok := named.(reference.Digested); !ok || d.Digest().String() != digest {
		return fmt.Errorf("parsed %s, not digest %q", named, digest)
	}
	return nil
}

// pinRef reports whether ref is one policy.Pins can return as a Pin's Ref:
// a reference with a tag and no digest.
func pinRef(ref string) bool {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return false
	}
	_, tagged := named.(reference.Tagged)
	_, digested := named.(reference.Digested)
	return tagged && !digested
}

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// digestCases are digests a registry (or a broken resolver) might answer,
// and whether each makes a valid pinned reference.
var digestCases = []struct {
	digest string
	valid  bool
}{
	{"sha256:" + hex64, true},
	{"sha384:" + hex64 + hex64[:32], true},
	{"sha512:" + hex64 + hex64, true},
	{"", false},
	{"sha256", false},
	{"sha256:", false},
	{":" + hex64, false},
	{hex64, false},
	{"sha256:" + hex64[:63], false},
	{"sha256:" + hex64 + "0", false},
	{"sha256:" + strings.ToUpper(hex64), false},
	{"SHA256:" + hex64, false},
	{"sha256:" + hex64[:63] + "g", false},
	{"sha256:" + hex64 + "\n", false},
	{"sha256:" + hex64[:32], false}, // the reference grammar's shortest hex, which go-digest refuses
	{"sha512:" + hex64, false},
	{"sha384:" + hex64, false},
	{"sha256+b64u:" + hex64, false},
	{"md5:0123456789abcdef0123456789abcdef", false},
	{"blake3:" + hex64, false},
	{"sha256:sha256:" + hex64[:56], false},
	{"sha256:" + hex64 + "@sha256:" + hex64, false},
	{"sha256:" + hex64 + ":latest", false},
	{"sha256:nothex/../x", false},
}

// checkDigest accepts exactly the digests that make a valid pinned
// reference, as the full parse of ref@digest decides, whatever the ref.
func TestCheckDigestAgreesWithTheReferenceParser(t *testing.T) {
	t.Parallel()
	refs := []string{"nginx:1.25", "registry.my.com/team/app:1.4", "localhost:5000/a/b/c:v1.0-rc.1", "127.0.0.1:29063/team/app:1.0"}
	for _, tc := range digestCases {
		t.Run(fmt.Sprintf("%q", tc.digest), func(t *testing.T) {
			t.Parallel()
			if got := checkDigest(tc.digest) == nil; got != tc.valid {
				t.Errorf("checkDigest(%q) valid = %v, want %v", tc.digest, got, tc.valid)
			}
			for _, ref := range refs {
				if got := parsedDigest(ref, tc.digest) == nil; got != tc.valid {
					t.Errorf("full parse of %s@%s: valid = %v, want %v (the table is wrong)", ref, tc.digest, got, tc.valid)
				}
			}
		})
	}
}

// FuzzCheckDigest holds checkDigest to the full parse of ref@digest for
// every ref a Pin can carry: a ref that is not one is replaced by one, so
// every input tries its digest.
func FuzzCheckDigest(f *testing.F) {
	for _, tc := range digestCases {
		f.Add("registry.my.com/team/app:1.4", tc.digest)
	}
	f.Add("docker.io/library/nginx:1.25", "sha256:"+hex64)
	f.Add("[::1]:5000/app:v1", "sha512:"+hex64+hex64)
	f.Fuzz(func(t *testing.T, ref, digest string) {
		if !pinRef(ref) {
			ref = "registry.my.com/team/app:1.4"
		}
		want := parsedDigest(ref, digest)
		if got := checkDigest(digest); (got == nil) != (want == nil) {
			t.Errorf("checkDigest(%q) = %v; the full parse of %s@%s says %v", digest, got, ref, digest, want)
		}
	})
}

// quoteCases are strings writeQuoted must quote as strconv.Quote does:
// those its shortcut takes and those it leaves to strconv.
var quoteCases = []string{"", "app", "registry.my.com/team/app:1.4@sha256:" + hex64, `say "hi"`, `back\slash`,
	"tab\there", "new\nline", "\x1b[31mred", "ünïcode", "\u200bzero-width", "\xff\xfe", "~!@#$%^&*()_+`-={}[]|:;'<>?,./"}

func quoted(s string) string {
	var b strings.Builder
	writeQuoted(&b, s)
	return b.String()
}

// writeQuoted's shortcut writes what strconv.Quote returns, and so does
// its fallback.
func TestWriteQuotedIsStrconvQuote(t *testing.T) {
	t.Parallel()
	for _, s := range quoteCases {
		if got, want := quoted(s), strconv.Quote(s); got != want {
			t.Errorf("writeQuoted(%s) wrote %s, want %s", want, got, want)
		}
	}
}

// FuzzWriteQuoted holds writeQuoted to strconv.Quote for any string.
func FuzzWriteQuoted(f *testing.F) {
	for _, s := range quoteCases {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := quoted(s), strconv.Quote(s); got != want {
			t.Errorf("writeQuoted(%s) wrote %s, want %s", want, got, want)
		}
	})
}

// mutationWarning's shortcut returns what warningText does: the text
// as is when it is printable ASCII within the bound, warningText's
// answer otherwise.
func TestMutationWarningIsWarningText(t *testing.T) {
	t.Parallel()
	for _, s := range append(quoteCases, strings.Repeat("a", maxWarningBytes), strings.Repeat("a", maxWarningBytes+1)) {
		if got, want := mutationWarning(s), warningText(s); got != want {
			t.Errorf("mutationWarning(%q) = %q, want %q", s, got, want)
		}
	}
}

// FuzzMutationWarning holds mutationWarning to warningText for any text.
func FuzzMutationWarning(f *testing.F) {
	for _, s := range quoteCases {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := mutationWarning(s), warningText(s); got != want {
			t.Errorf("mutationWarning(%q) = %q, want %q", s, got, want)
		}
	})
}
