package asterisk

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/pbxtest"
)

// testPKI is a private CA with one server certificate (127.0.0.1) and one
// client certificate, as a site that runs Asterisk behind its own CA has.
type testPKI struct {
	pool           *x509.CertPool
	server, client tls.Certificate
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, usage x509.ExtKeyUsage, ips []net.IP) tls.Certificate {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "leaf"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips, KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return testPKI{pool: pool,
		server: issue(2, x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)}),
		client: issue(3, x509.ExtKeyUsageClientAuth, nil)}
}

// Given Asterisk's ARI over https with the site's own CA and client
// certificates required, then the driver with Config.TLS (the CA and a
// client certificate) connects REST and websocket and places calls; one
// without the client certificate never gets a link.
func TestTLS_givenPrivateCAAndClientCertificates_thenLinkUpAndCalls(t *testing.T) {
	pki := newTestPKI(t)
	emu := startEmu(t, nil)
	front := httptest.NewUnstartedServer(emu)
	front.TLS = &tls.Config{Certificates: []tls.Certificate{pki.server}, ClientCAs: pki.pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	front.StartTLS()
	t.Cleanup(front.Close)
	url := front.URL + "/ari"

	d, rec := runDriver(t, url, true, func(c *Config) {
		c.TLS = &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{pki.client}, MinVersion: tls.VersionTLS12}
	})
	if err := d.CreateConference(context.Background(), "conf-tls"); err != nil {
		t.Fatalf("conference over TLS: %v", err)
	}
	if err := dial(t, d, "leg-tls", "conf-tls", "+12025551234", 0); err != nil {
		t.Fatalf("dial over TLS: %v", err)
	}
	rec.WaitEvent(t, "leg-tls", pbx.EventConnected)

	noCert := newEmuDriver(t, url, func(c *Config) {
		c.TLS = &tls.Config{RootCAs: pki.pool, MinVersion: tls.VersionTLS12}
	})
	pbxtest.Run(t, noCert, pbxtest.NewRecorder())
	time.Sleep(time.Second)
	if st := noCert.Status(); st.Ready {
		t.Fatalf("a driver without the client certificate got a link: %+v", st)
	}
}
