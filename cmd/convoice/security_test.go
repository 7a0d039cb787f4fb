package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSecret_RedactDSNHidesEveryPasswordForm(t *testing.T) {
	cases := []struct{ dsn, secret, keep string }{
		{"postgres://convoice:s3cret@db:5432/convoice?sslmode=require", "s3cret", "postgres://convoice:***@db:5432/convoice?sslmode=require"},
		{"postgresql://convoice:pa/ss@w0rd@db/convoice", "pa/ss@w0rd", "postgresql://convoice:***@db/convoice"},
		{"postgres://db/convoice?user=convoice&password=hunter2&sslmode=verify-full", "hunter2", "sslmode=verify-full"},
		{"postgres://convoice@db/convoice?sslpassword=keypass", "keypass", "postgres://convoice@db/convoice"},
		{"host=db user=convoice password='two words' dbname=convoice", "two words", "dbname=convoice"},
		{"host=db password=plain dbname=convoice", "plain", "host=db"},
		{"file:convoice.db?_auth_user=a&_auth_pass=sqlitepass", "sqlitepass", "_auth_user=a"},
	}
	for _, c := range cases {
		got := redactDSN(c.dsn)
		if strings.Contains(got, c.secret) {
			t.Errorf("redactDSN(%q) = %q: the password is still there", c.dsn, got)
		}
		if !strings.Contains(got, c.keep) {
			t.Errorf("redactDSN(%q) = %q: lost %q", c.dsn, got, c.keep)
		}
	}
	for _, plain := range []string{"convoice.db", "/var/lib/convoice/convoice.db", "postgres://convoice@db/convoice?sslmode=disable"} {
		if got := redactDSN(plain); got != plain {
			t.Errorf("redactDSN(%q) = %q: nothing to hide, want it unchanged", plain, got)
		}
	}
}

func TestPolicy_FromEnvReadsEveryVariableAndRefusesNonsense(t *testing.T) {
	set := map[string]string{
		"CONVOICE_ALLOWED_COUNTRIES":            "US, CA, +44",
		"CONVOICE_GUEST_ALLOWED_COUNTRIES":      "US",
		"CONVOICE_BLOCKED_NUMBER_TYPES":         "premium_rate,shared_cost",
		"CONVOICE_GUEST_ALLOWED_NUMBER_TYPES":   "MOBILE",
		"CONVOICE_GUEST_EXTENSIONS":             "true",
		"CONVOICE_DIAL_ALLOW":                   "+4420",
		"CONVOICE_DIAL_DENY":                    "+1 900, 9",
		"CONVOICE_MAX_CALLS_PER_USER":           "2",
		"CONVOICE_MAX_CALLS_PER_GUEST":          "1",
		"CONVOICE_MAX_CALLS_PER_CONVERSATION":   "20",
		"CONVOICE_MAX_CALLS":                    "off",
		"CONVOICE_DIALS_PER_USER":               "5",
		"CONVOICE_DIALS_PER_GUEST":              "2",
		"CONVOICE_DIALS_PER_CONVERSATION":       "30",
		"CONVOICE_GUEST_DIALS_PER_CONVERSATION": "4",
		"CONVOICE_DIALS_TOTAL":                  "100",
		"CONVOICE_DIAL_RATE_WINDOW":             "30s",
	}
	for k, v := range set {
		t.Setenv(k, v)
	}
	p, err := policyFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(p.AllowedCountries, ",") != "US,CA,+44" || strings.Join(p.GuestAllowedCountries, ",") != "US" ||
		len(p.BlockedTypes) != 2 || len(p.GuestAllowedTypes) != 1 || !p.GuestExtensions ||
		strings.Join(p.AllowPrefixes, ",") != "+4420" || strings.Join(p.DenyPrefixes, ",") != "+1900,9" ||
		p.MaxLiveLegsPerUser != 2 || p.MaxLiveLegsPerGuest != 1 || p.MaxLiveLegsPerConversation != 20 || p.MaxLiveLegs != -1 ||
		p.DialsPerUser != 5 || p.DialsPerGuest != 2 || p.DialsPerConversation != 30 || p.GuestDialsPerConversation != 4 ||
		p.DialsTotal != 100 || p.Window.String() != "30s" {
		t.Fatalf("policy from env: %+v", p)
	}
	for k, v := range map[string]string{
		"CONVOICE_ALLOWED_COUNTRIES":    "Narnia",
		"CONVOICE_BLOCKED_NUMBER_TYPES": "EXPENSIVE",
		"CONVOICE_DIAL_DENY":            "+1900;DROP",
		"CONVOICE_MAX_CALLS":            "0",
		"CONVOICE_DIALS_PER_USER":       "-3",
		"CONVOICE_DIAL_RATE_WINDOW":     "5ms",
		"CONVOICE_GUEST_EXTENSIONS":     "perhaps",
	} {
		t.Run(k, func(t *testing.T) {
			t.Setenv(k, v)
			if _, err := policyFromEnv(); err == nil || !strings.Contains(err.Error(), k) {
				t.Fatalf("%s=%q: %v, want an error naming it", k, v, err)
			}
		})
	}
}

// /metrics can be protected: with CONVOICE_METRICS_TOKEN it asks for the
// token; with CONVOICE_METRICS_LISTEN it is served only there, not on the
// API's address.
func TestServe_MetricsBehindATokenOrOnTheirOwnAddress(t *testing.T) {
	get := func(url, token string) int {
		req, _ := http.NewRequest("GET", url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		r.Body.Close()
		return r.StatusCode
	}
	dir := t.TempDir()
	addr, maddr := freeAddr(t), freeAddr(t)
	p := start(t, []string{"CONVOICE_LISTEN=" + addr, "CONVOICE_DB=" + filepath.Join(dir, "a.db"),
		"CONVOICE_METRICS_TOKEN=metrics-secret", "CONVOICE_METRICS_LISTEN=" + maddr}, "serve")
	waitHTTP(t, "http://"+addr+"/readyz", p)
	if st := get("http://"+addr+"/metrics", "metrics-secret"); st != 404 {
		t.Errorf("/metrics on the API's address: %d, want 404 (served elsewhere)", st)
	}
	if st := get("http://"+maddr+"/metrics", ""); st != 401 {
		t.Errorf("/metrics without the token: %d, want 401", st)
	}
	if st := get("http://"+maddr+"/metrics", "wrong"); st != 401 {
		t.Errorf("/metrics with a wrong token: %d, want 401", st)
	}
	if st := get("http://"+maddr+"/metrics", "metrics-secret"); st != 200 {
		t.Errorf("/metrics with the token: %d, want 200", st)
	}
}

// The TLS settings towards Asterisk are read from files and refused
// clearly when wrong.
func TestConfig_ARITLSFilesReadAndNonsenseRefused(t *testing.T) {
	if c, err := ariTLS("", "", ""); c != nil || err != nil {
		t.Fatalf("no files: %v %v, want the system roots", c, err)
	}
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ariTLS(notPEM, "", ""); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("a CA file without a certificate: %v", err)
	}
	if _, err := ariTLS(filepath.Join(dir, "missing.pem"), "", ""); err == nil || !strings.Contains(err.Error(), "CONVOICE_ARI_CA_FILE") {
		t.Errorf("a missing CA file: %v", err)
	}
	if _, err := ariTLS("", filepath.Join(dir, "cert.pem"), ""); err == nil || !strings.Contains(err.Error(), "go together") {
		t.Errorf("a certificate without its key: %v", err)
	}
}
