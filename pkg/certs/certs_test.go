package certs_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagegate/imagegate/pkg/certs"
	"github.com/imagegate/imagegate/pkg/server/servertest"
)

// observer records what a Reloader reports.
type observer struct {
	mu     sync.Mutex
	events []string
}

func (o *observer) add(s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, s)
}

func (o *observer) CertificateLoaded(name string, _ time.Time) { o.add("loaded " + name) }
func (o *observer) CertificateReloaded(name string, ok bool, _ time.Time) {
	if ok {
		o.add("reloaded " + name)
	} else {
		o.add("failed " + name)
	}
}
func (o *observer) ClientRejected(reason string) { o.add("rejected " + reason) }

func (o *observer) take() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	e := o.events
	o.events = nil
	return e
}

// files is a Secret volume holding a serving pair and a client CA.
type files struct {
	vol     *servertest.SecretVolume
	content map[string][]byte
}

func newFiles(t *testing.T, ca *servertest.CA, clientCA *servertest.CA) *files {
	t.Helper()
	crt, key := ca.IssuePEM(t, "localhost", "localhost")
	f := &files{content: map[string][]byte{"tls.crt": crt, "tls.key": key, "ca.crt": clientCA.CertPEM}}
	f.vol = servertest.NewSecretVolume(t, t.TempDir(), f.content)
	return f
}

func (f *files) update(t *testing.T, edit map[string][]byte) {
	t.Helper()
	for k, v := range edit {
		f.content[k] = v
	}
	f.vol.Update(t, f.content)
}

func (f *files) options(o *observer) certs.Options {
	// An hour's poll: a test that sees a reload saw the watch.
	return certs.Options{CertFile: f.vol.Path("tls.crt"), KeyFile: f.vol.Path("tls.key"), ClientCAFile: f.vol.Path("ca.crt"), Observer: o, PollInterval: time.Hour}
}

// newReloader serves a fresh Secret volume, reporting to an observer
// whose load events are already taken.
func newReloader(t *testing.T) (*servertest.CA, *files, *observer, *certs.Reloader) {
	t.Helper()
	dir := t.TempDir()
	ca := servertest.NewCA(t, dir, "serving")
	f := newFiles(t, ca, servertest.NewCA(t, dir, "client"))
	o := &observer{}
	r, err := certs.New(f.options(o))
	if err != nil {
		t.Fatal(err)
	}
	o.take()
	return ca, f, o, r
}

func serial(c *tls.Certificate) string { return c.Leaf.SerialNumber.String() }

func TestReloadKeepsTheOldMaterialWhenTheNewIsBroken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := servertest.NewCA(t, dir, "serving")
	clientCA := servertest.NewCA(t, dir, "client")
	other := servertest.NewCA(t, dir, "other")
	goodCrt, goodKey := ca.IssuePEM(t, "localhost", "localhost")
	_, otherKey := ca.IssuePEM(t, "localhost", "localhost")
	expired, expiredKey := ca.IssueTemplate(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	tests := []struct {
		name string
		// edit is the new content of some files.
		edit map[string][]byte
		// want is what the observer hears.
		want []string
	}{
		{name: "certificate that is not PEM", edit: map[string][]byte{"tls.crt": []byte("garbage")}, want: []string{"failed serving"}},
		{name: "certificate cut short", edit: map[string][]byte{"tls.crt": goodCrt[:len(goodCrt)/2]}, want: []string{"failed serving"}},
		{name: "key of another certificate", edit: map[string][]byte{"tls.crt": goodCrt, "tls.key": otherKey}, want: []string{"failed serving"}},
		{name: "empty key", edit: map[string][]byte{"tls.key": {}}, want: []string{"failed serving"}},
		{name: "expired certificate", edit: map[string][]byte{"tls.crt": expired, "tls.key": expiredKey}, want: []string{"failed serving"}},
		{name: "client CA that is not PEM", edit: map[string][]byte{"ca.crt": []byte("garbage")}, want: []string{"failed client-ca"}},
		{name: "client CA bundle with a key in it", edit: map[string][]byte{"ca.crt": append(append([]byte{}, other.CertPEM...), goodKey...)}, want: []string{"failed client-ca"}},
		{name: "both broken", edit: map[string][]byte{"tls.key": otherKey, "ca.crt": {}}, want: []string{"failed serving", "failed client-ca"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFiles(t, ca, clientCA)
			o := &observer{}
			r, err := certs.New(f.options(o))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := o.take(), []string{"loaded serving", "loaded client-ca"}; !reflect.DeepEqual(got, want) {
				t.Errorf("New: got %q, want %q", got, want)
			}
			before := serial(r.Certificate())
			f.update(t, tc.edit)
			r.Reload()
			if got := o.take(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Reload: got %q, want %q", got, tc.want)
			}
			if got := serial(r.Certificate()); got != before {
				t.Errorf("serving certificate %s after a broken renewal, want the old %s", got, before)
			}
			// The same broken content is reported once, not on every poll.
			r.Reload()
			if got := o.take(); len(got) != 0 {
				t.Errorf("second Reload of the same files: got %q, want nothing", got)
			}
			// A good renewal after the broken one is taken.
			crt, key := ca.IssuePEM(t, "localhost", "localhost")
			f.update(t, map[string][]byte{"tls.crt": crt, "tls.key": key, "ca.crt": other.CertPEM})
			r.Reload()
			if got := serial(r.Certificate()); got == before {
				t.Error("a good renewal after a broken one was not used")
			}
		})
	}
}

func TestReloadSkipsUnchangedFiles(t *testing.T) {
	t.Parallel()
	ca, f, o, r := newReloader(t)
	f.update(t, nil) // a new ..data directory with the same content
	r.Reload()
	if got := o.take(); len(got) != 0 {
		t.Errorf("Reload of unchanged content: got %q, want nothing", got)
	}
	crt, key := ca.IssuePEM(t, "localhost", "localhost")
	f.update(t, map[string][]byte{"tls.crt": crt, "tls.key": key})
	r.Reload()
	if got, want := o.take(), []string{"reloaded serving"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Reload of a renewed pair: got %q, want %q", got, want)
	}
}

func TestNewFailsOnBrokenFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := servertest.NewCA(t, dir, "serving")
	crt, key := ca.Issue(t, dir, "localhost")
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		opts    certs.Options
		wantErr string
	}{
		{name: "missing key", opts: certs.Options{CertFile: crt, KeyFile: filepath.Join(dir, "nope")}, wantErr: "load serving certificate"},
		{name: "client CA that does not parse", opts: certs.Options{CertFile: crt, KeyFile: key, ClientCAFile: garbage}, wantErr: "certificate 1:"},
		{name: "client CA with a key", opts: certs.Options{CertFile: crt, KeyFile: key, ClientCAFile: key}, wantErr: `PEM block 1 is a "EC PRIVATE KEY"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := certs.New(tc.opts); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("New: got %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestCertificateNames(t *testing.T) {
	t.Parallel()
	u, _ := url.Parse("spiffe://cluster.local/ns/kube-system/sa/apiserver")
	c := &x509.Certificate{
		Subject:        pkix.Name{CommonName: "kube-apiserver"},
		DNSNames:       []string{"apiserver.example.com"},
		EmailAddresses: []string{"ops@example.com"},
		URIs:           []*url.URL{u},
	}
	want := []string{"kube-apiserver", "apiserver.example.com", "ops@example.com", "spiffe://cluster.local/ns/kube-system/sa/apiserver"}
	if got := certs.CertificateNames(c); !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestReloadStraddlingASwap replaces the whole Secret volume between the
// reads of the certificate and of the key, as the kubelet may while a
// reload runs: the reload must take the new pair, not report the new key
// with the old certificate as a broken renewal. Not parallel: it replaces
// the package's file reader.
func TestReloadStraddlingASwap(t *testing.T) {
	ca, f, o, r := newReloader(t)
	old := serial(r.Certificate())

	crt, key := ca.IssuePEM(t, "localhost", "localhost")
	var swapped bool
	restore := certs.SetReadFile(func(name string) ([]byte, error) {
		data, err := os.ReadFile(name)
		if !swapped && strings.HasSuffix(name, "tls.crt") {
			swapped = true // the old certificate is read; now the kubelet swaps
			f.update(t, map[string][]byte{"tls.crt": crt, "tls.key": key})
		}
		return data, err
	})
	defer restore()
	r.Reload()
	if !swapped {
		t.Fatal("the swap never happened")
	}
	if got, want := o.take(), []string{"reloaded serving"}; !reflect.DeepEqual(got, want) {
		t.Errorf("reload straddling a swap: got %q, want %q", got, want)
	}
	if got := serial(r.Certificate()); got == old {
		t.Errorf("still serving serial %s, want the new certificate", got)
	}
}

// waitForNewCertificate waits, reload by reload, until r serves a
// certificate other than old, and fails the test after a deadline far
// beyond the watch's maximum wait but far short of the poll.
func waitForNewCertificate(t *testing.T, r *certs.Reloader, old string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		reloaded := r.Reloaded() // before the check, so no reload slips between
		if serial(r.Certificate()) != old {
			return
		}
		select {
		case <-reloaded:
		case <-deadline:
			t.Fatalf("still serving serial %s after 10s, want the renewed certificate", old)
		}
	}
}

// every calls f every 10ms until the test ends.
func every(t *testing.T, f func() error) {
	t.Helper()
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for tick := time.NewTicker(10 * time.Millisecond); ; {
			select {
			case <-stop:
				tick.Stop()
				return
			case <-tick.C:
				if err := f(); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
}

func TestWatchReloadsASecretSwapBesideANoisyFile(t *testing.T) {
	t.Parallel()
	ca, f, _, r := newReloader(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.Start(ctx)
	old := serial(r.Certificate())

	// Another program's log in the same directory, written throughout.
	noise, err := os.Create(filepath.Join(f.vol.Dir, "noise.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = noise.Close() })
	every(t, func() error { _, err := noise.WriteString("line\n"); return err })

	crt, key := ca.IssuePEM(t, "localhost", "localhost")
	f.update(t, map[string][]byte{"tls.crt": crt, "tls.key": key})
	waitForNewCertificate(t, r, old)
}

func TestWatchReloadsWithinTheMaxWaitWhileTheFileKeepsChanging(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, certFile, keyFile := servertest.ServingPair(t, dir)
	r, err := certs.New(certs.Options{CertFile: certFile, KeyFile: keyFile, PollInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.Start(ctx)
	old := serial(r.Certificate())

	crt, key := ca.IssuePEM(t, "localhost", "localhost")
	if err := os.WriteFile(certFile, crt, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	// A writer that keeps writing the key in place, the same bytes each
	// time: a stream of events on a watched file that never settles.
	k, err := os.OpenFile(keyFile, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close() })
	every(t, func() error { _, err := k.WriteAt(key, 0); return err })
	waitForNewCertificate(t, r, old)
}
