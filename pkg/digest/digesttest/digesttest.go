// Package digesttest serves go-containerregistry's in-memory registry over
// TLS on loopback, for the tests and benchmarks of digest pinning: a
// registry that can push images and indexes, count the manifest requests
// imagegate makes, hang, or require basic-auth credentials.
package digesttest

import (
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Registry is an in-memory registry behind TLS, closed when the test ends.
type Registry struct {
	// CAFile holds the registry's certificate as PEM, for digest.Options.CAFile.
	CAFile string
	// Manifests counts the manifest requests imagegate made (its
	// User-Agent); pushes are not counted.
	Manifests atomic.Int64
	// Hanging makes every request wait until the test ends or its
	// client gives up.
	Hanging atomic.Bool

	srv        *httptest.Server
	hang       chan struct{}
	user, pass string
}

// New starts a registry anyone may read and push to.
func New(t testing.TB) *Registry { return NewWithAuth(t, "", "") }

// NewWithAuth starts a registry that requires basic-auth user and pass;
// empty user: none.
func NewWithAuth(t testing.TB, user, pass string) *Registry {
	t.Helper()
	r := &Registry{hang: make(chan struct{}), user: user, pass: pass}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.Hanging.Load() {
			select {
			case <-r.hang:
			case <-req.Context().Done():
			}
			return
		}
		if r.user != "" {
			if u, p, ok := req.BasicAuth(); !ok || u != r.user || p != r.pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"who are you"}]}`, http.StatusUnauthorized)
				return
			}
		}
		if strings.Contains(req.URL.Path, "/manifests/") && strings.Contains(req.UserAgent(), "imagegate/") {
			r.Manifests.Add(1)
		}
		reg.ServeHTTP(w, req)
	}))
	t.Cleanup(func() { close(r.hang); r.srv.Close() })
	r.CAFile = filepath.Join(t.TempDir(), "ca.pem")
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.srv.Certificate().Raw})
	if err := os.WriteFile(r.CAFile, ca, 0o600); err != nil {
		t.Fatal(err)
	}
	return r
}

// Host is the registry's host:port, as references name it.
func (r *Registry) Host() string { return strings.TrimPrefix(r.srv.URL, "https://") }

// Push writes a new random single-platform image to repoTag
// ("team/app:1.0") and returns its digest.
func (r *Registry) Push(t testing.TB, repoTag string) string {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r.tag(t, repoTag), img, r.options()...); err != nil {
		t.Fatal(err)
	}
	return digestOf(t, img)
}

// PushIndex writes a new random two-platform index to repoTag and returns
// the index digest and the digest of its first manifest.
func (r *Registry) PushIndex(t testing.TB, repoTag string) (index, first string) {
	t.Helper()
	idx, err := random.Index(256, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r.tag(t, repoTag), idx, r.options()...); err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	return digestOf(t, idx), m.Manifests[0].Digest.String()
}

func (r *Registry) tag(t testing.TB, repoTag string) name.Tag {
	t.Helper()
	tag, err := name.NewTag(r.Host() + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	return tag
}

func (r *Registry) options() []remote.Option {
	opts := []remote.Option{remote.WithTransport(r.srv.Client().Transport)}
	if r.user != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: r.user, Password: r.pass}))
	}
	return opts
}

func digestOf(t testing.TB, o interface{ Digest() (v1.Hash, error) }) string {
	t.Helper()
	d, err := o.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}
