package testsvc

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

// Certs is a throwaway certificate authority with a server certificate for
// 127.0.0.1 and localhost and a client certificate, written as PEM files
// into one directory. Tests hand the files to servers started with TLS and
// to the clients under test.
type Certs struct {
	Dir string
	// CAFile holds the CA certificate that signed both leaf certificates.
	CAFile string
	// ServerCertFile and ServerKeyFile are the server's pair (SANs
	// 127.0.0.1, ::1 and localhost).
	ServerCertFile, ServerKeyFile string
	// ClientCertFile and ClientKeyFile are a client pair (CN "postgres",
	// so PostgreSQL's cert authentication maps it to that user).
	ClientCertFile, ClientKeyFile string
}

// GenerateCerts creates a new CA and its server and client certificates in
// a temporary directory, removed at t.Cleanup. Every call creates a
// different CA, so a second call gives a "wrong CA" for negative tests.
func GenerateCerts(t testing.TB) *Certs {
	t.Helper()
	dir := makeTempDir(t, "tandem-certs-")
	c, err := writeCerts(dir)
	if err != nil {
		t.Fatalf("testsvc: generate certificates: %v", err)
	}
	return c
}

// TLSConfig is a client configuration that trusts the CA (and presents the
// client certificate), for the readiness probes of TLS servers.
func (c *Certs) TLSConfig() (*tls.Config, error) {
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", c.CAFile)
	}
	pair, err := tls.LoadX509KeyPair(c.ClientCertFile, c.ClientKeyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}, nil
}

func writeCerts(dir string) (*Certs, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tandem test CA " + randomSuffix()},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	c := &Certs{
		Dir:            dir,
		CAFile:         filepath.Join(dir, "ca.crt"),
		ServerCertFile: filepath.Join(dir, "server.crt"),
		ServerKeyFile:  filepath.Join(dir, "server.key"),
		ClientCertFile: filepath.Join(dir, "client.crt"),
		ClientKeyFile:  filepath.Join(dir, "client.key"),
	}
	if err := writePEM(c.CAFile, "CERTIFICATE", caDER, 0o644); err != nil {
		return nil, err
	}
	leaf := func(serial int64, cn string, usage []x509.ExtKeyUsage, server bool, certFile, keyFile string) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  usage,
		}
		if server {
			tmpl.DNSNames = []string{"localhost"}
			tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		if err := writePEM(certFile, "CERTIFICATE", der, 0o644); err != nil {
			return err
		}
		return writePEM(keyFile, "PRIVATE KEY", keyDER, 0o600)
	}
	// The server pair is a client certificate too: the nodes of a TLS Redis
	// Cluster present it to each other on the cluster bus and for
	// replication, and the accepting node checks it is fit for a client.
	if err := leaf(2, "127.0.0.1", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, true, c.ServerCertFile, c.ServerKeyFile); err != nil {
		return nil, err
	}
	if err := leaf(3, "postgres", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, false, c.ClientCertFile, c.ClientKeyFile); err != nil {
		return nil, err
	}
	return c, nil
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, b, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func randomSuffix() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<40))
	return n.String()
}
