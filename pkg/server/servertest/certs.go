// Package servertest makes throwaway TLS material for tests of imagegate's
// servers and clients.
package servertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a throwaway certificate authority.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
	// File is the CA certificate written as PEM.
	File string
}

// NewCA creates a CA and writes its certificate to dir/<name>-ca.crt.
func NewCA(t testing.TB, dir, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name + "-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	ca.File = write(t, filepath.Join(dir, name+"-ca.crt"), ca.CertPEM)
	return ca
}

// Pool returns a pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Issue signs a leaf certificate for cn (also used as a DNS SAN, with
// 127.0.0.1 and ::1 as IP SANs), usable for both server and client auth, and
// writes it and its key to dir/<cn>.crt and dir/<cn>.key.
func (ca *CA) Issue(t testing.TB, dir, cn string) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM := ca.IssuePEM(t, cn, cn)
	certFile = write(t, filepath.Join(dir, cn+".crt"), certPEM)
	keyFile = write(t, filepath.Join(dir, cn+".key"), keyPEM)
	return certFile, keyFile
}

// IssuePEM signs a leaf certificate with subject common name cn and the
// given DNS SANs (plus 127.0.0.1 and ::1), valid from an hour ago for a
// day, usable for both server and client auth, and returns it and a new key
// as PEM.
func (ca *CA) IssuePEM(t testing.TB, cn string, dnsNames ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	return ca.IssueTemplate(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		DNSNames:    dnsNames,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:   time.Now().Add(-time.Hour),
		NotAfter:    time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	})
}

// IssueTemplate signs tmpl (given a fresh serial number) with a new key and
// returns the certificate and the key as PEM.
func (ca *CA) IssueTemplate(t testing.TB, tmpl *x509.Certificate) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial(t)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

// KeyPair issues a client or server certificate as IssuePEM does and
// returns it ready for a tls.Config.
func (ca *CA) KeyPair(t testing.TB, cn string, dnsNames ...string) tls.Certificate {
	t.Helper()
	certPEM, keyPEM := ca.IssuePEM(t, cn, dnsNames...)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// ServingPair writes a CA and a localhost serving certificate into dir.
func ServingPair(t testing.TB, dir string) (ca *CA, certFile, keyFile string) {
	t.Helper()
	ca = NewCA(t, dir, "serving")
	certFile, keyFile = ca.Issue(t, dir, "localhost")
	return ca, certFile, keyFile
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func write(t testing.TB, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// SecretVolume lays files out as the kubelet does for a Secret volume, and
// updates them the same way: each version in its own hidden directory, a
// "..data" symlink to the current one, and each file a symlink through
// "..data". An update writes a new directory, then renames a new "..data"
// symlink over the old one (the one atomic step), then removes the old
// directory. The visible files are never written; watching them finds
// nothing.
type SecretVolume struct {
	// Dir is the mount point.
	Dir     string
	version int
	current string
}

// NewSecretVolume creates the volume in dir with files (name to content).
func NewSecretVolume(t testing.TB, dir string, files map[string][]byte) *SecretVolume {
	t.Helper()
	v := &SecretVolume{Dir: dir}
	v.Update(t, files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

// Path returns the visible path of the file name.
func (v *SecretVolume) Path(name string) string { return filepath.Join(v.Dir, name) }

// Update replaces the content of every file at once; files must name the
// same files as NewSecretVolume did.
func (v *SecretVolume) Update(t testing.TB, files map[string][]byte) {
	t.Helper()
	v.version++
	ts := fmt.Sprintf("..2025_01_01_00_00_00.%09d", v.version)
	if err := os.Mkdir(filepath.Join(v.Dir, ts), 0o750); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		write(t, filepath.Join(v.Dir, ts, name), data)
	}
	tmp := filepath.Join(v.Dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.Dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if v.current != "" {
		if err := os.RemoveAll(filepath.Join(v.Dir, v.current)); err != nil {
			t.Fatal(err)
		}
	}
	v.current = ts
}
