package cli_test

import (
	"encoding/pem"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/pkg/cli"
)

// check --pin-digests asks the registry, as the mutating webhook would,
// and shows the digest the tag names today; a tag it cannot resolve is
// judged unpinned, and the line says why.
func TestCheckPinDigestsShowsTheDigestToday(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "https://")
	img, err := random.Image(128, 1)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(host + "/team/app:1.0")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img, remote.WithTransport(srv.Client().Transport)); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(file, []byte("apiVersion: imagegate.dev/v1alpha1\nkind: ImagePolicy\ndefault:\n  requireDigest: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		image string
		code  int
		want  string
	}{
		{name: "a tag the registry serves is pinned", image: tag.String(), code: cli.ExitOK,
			want: "allowed\t\"" + tag.String() + "\"\tpinned to " + tag.String() + "@" + d.String() + "\n"},
		{name: "a missing tag is left unpinned, and requireDigest refuses it", image: host + "/team/app:9", code: cli.ExitDenied,
			want: "; not pinned: the registry has no manifest for " + host + "/team/app:9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := run(t, nil, nil, "check", "--pin-digests", "--registry-ca-file="+ca, "--config="+file, tc.image)
			if r.code != tc.code || !strings.Contains(r.stdout, tc.want) {
				t.Errorf("got exit %d, stdout %q, stderr %q; want exit %d and %q", r.code, r.stdout, r.stderr, tc.code, tc.want)
			}
		})
	}
}
