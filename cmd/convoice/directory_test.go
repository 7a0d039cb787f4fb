package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/convoice/convoice/controller"
	"github.com/convoice/convoice/storage"
)

// startSlapd starts Debian's slapd on a free loopback port with a fresh
// config and database, and returns its URL and an admin connection.
func startSlapd(t *testing.T) (string, *ldap.Conn) {
	t.Helper()
	bin := "/usr/sbin/slapd"
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("the LDAP tests need Debian's slapd: DEBIAN_FRONTEND=noninteractive apt-get install -y slapd ldap-utils")
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "db"), 0o700); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile %[1]s/slapd.pid
database mdb
maxsize 10485760
suffix "dc=example,dc=com"
rootdn "cn=admin,dc=example,dc=com"
rootpw admin-secret
directory %[1]s/db
`, dir)
	if err := os.WriteFile(filepath.Join(dir, "slapd.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	url := "ldap://" + addr
	var out bytes.Buffer
	cmd := exec.Command(bin, "-f", filepath.Join(dir, "slapd.conf"), "-h", url+"/", "-d", "0")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start slapd: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var conn *ldap.Conn
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err = ldap.DialURL(url)
		if err == nil {
			if err = conn.Bind("cn=admin,dc=example,dc=com", "admin-secret"); err == nil {
				break
			}
			conn.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("slapd did not come up: %v\n%s", err, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Cleanup(func() { conn.Close() })
	add := func(dn string, attrs map[string][]string) {
		r := ldap.NewAddRequest(dn, nil)
		for k, v := range attrs {
			r.Attribute(k, v)
		}
		if err := conn.Add(r); err != nil {
			t.Fatalf("add %s: %v", dn, err)
		}
	}
	add("dc=example,dc=com", map[string][]string{"objectClass": {"dcObject", "organization"}, "dc": {"example"}, "o": {"Example"}})
	add("ou=people,dc=example,dc=com", map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {"people"}})
	add("cn=reader,dc=example,dc=com", map[string][]string{"objectClass": {"person", "simpleSecurityObject"}, "cn": {"reader"},
		"sn": {"reader"}, "userPassword": {"reader-secret"}})
	return url, conn
}

func addPerson(t *testing.T, conn *ldap.Conn, uid, cn, mail, phone, mobile string) {
	t.Helper()
	r := ldap.NewAddRequest("uid="+uid+",ou=people,dc=example,dc=com", nil)
	r.Attribute("objectClass", []string{"inetOrgPerson"})
	r.Attribute("uid", []string{uid})
	r.Attribute("cn", []string{cn})
	r.Attribute("sn", []string{strings.Fields(cn)[len(strings.Fields(cn))-1]})
	r.Attribute("mail", []string{mail})
	if phone != "" {
		r.Attribute("telephoneNumber", []string{phone})
	}
	if mobile != "" {
		r.Attribute("mobile", []string{mobile})
	}
	if err := conn.Add(r); err != nil {
		t.Fatalf("add %s: %v", uid, err)
	}
}

func runSync(t *testing.T) string {
	t.Helper()
	var out bytes.Buffer
	if err := runDirectory([]string{"sync"}, &out); err != nil {
		t.Fatalf("convoice directory sync: %v\n%s", err, out.String())
	}
	t.Logf("convoice directory sync:\n%s", out.String())
	return out.String()
}

// Given a real slapd with people, `convoice directory sync` adds them
// with their work and mobile numbers; a second run changes nothing; a
// changed entry is updated, and someone who left the filter is
// deactivated (their token stops working).
func TestDirectorySync_GivenSlapd_ThenAddsChangesDeactivatesAndIsIdempotent(t *testing.T) {
	url, conn := startSlapd(t)
	db := filepath.Join(t.TempDir(), "convoice.db")
	t.Setenv("CONVOICE_DB", db)
	t.Setenv("CONVOICE_LDAP_URL", url)
	t.Setenv("CONVOICE_LDAP_BIND_DN", "cn=admin,dc=example,dc=com")
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("admin-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CONVOICE_LDAP_BIND_PASSWORD_FILE", pw)
	t.Setenv("CONVOICE_LDAP_BASE_DN", "ou=people,dc=example,dc=com")
	t.Setenv("CONVOICE_LDAP_FILTER", "(&(objectClass=inetOrgPerson)(mail=*)(!(employeeType=left)))")

	addPerson(t, conn, "lena", "Lena Ldap", "lena@example.com", "+1 202 555 0141", "(202) 555-0142")
	addPerson(t, conn, "mo", "Mo Mobile", "Mo@Example.com", "", "+1 202 555 0143")
	addPerson(t, conn, "bad", "Bad Number", "bad@example.com", "12", "")

	out := runSync(t)
	for _, want := range []string{"created lena@example.com", "created mo@example.com", "skipped bad@example.com", "2 changed, 1 skipped"} {
		if !strings.Contains(out, want) {
			t.Fatalf("first sync: %q missing from\n%s", want, out)
		}
	}
	ctx := context.Background()
	store, err := storage.Open(ctx, db, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	users, err := store.FindUsers(ctx, storage.UserQuery{Email: "lena@example.com"})
	if err != nil || len(users) != 1 {
		t.Fatalf("lena: %v %v", users, err)
	}
	lena := users[0]
	if lena.Source != "ldap" || lena.ExternalID == "" || len(lena.Numbers) != 2 ||
		lena.Numbers[0].Label != "work" || lena.Numbers[0].Number != "+12025550141" || !lena.Numbers[0].IsDefault ||
		lena.Numbers[1].Label != "mobile" || lena.Numbers[1].Number != "+12025550142" {
		t.Fatalf("lena = %+v", lena)
	}

	if out := runSync(t); !strings.Contains(out, "0 changed, 1 skipped") || strings.Contains(out, "created") || strings.Contains(out, "updated") {
		t.Fatalf("second sync changed something:\n%s", out)
	}

	// Lena gets a new mobile and a display name; Mo leaves the filter.
	m := ldap.NewModifyRequest("uid=lena,ou=people,dc=example,dc=com", nil)
	m.Replace("mobile", []string{"+1 202 555 0149"})
	m.Replace("displayName", []string{"Lena L. Ldap"})
	if err := conn.Modify(m); err != nil {
		t.Fatal(err)
	}
	m = ldap.NewModifyRequest("uid=mo,ou=people,dc=example,dc=com", nil)
	m.Add("employeeType", []string{"left"})
	if err := conn.Modify(m); err != nil {
		t.Fatal(err)
	}
	mo, err := store.FindUsers(ctx, storage.UserQuery{Email: "mo@example.com"})
	if err != nil || len(mo) != 1 {
		t.Fatal(mo, err)
	}
	ctl, st2, _, err := openForAdmin(ctx, newFlagSet(), nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ctl.IssueToken(ctx, admin, mo[0].ID, "laptop")
	st2.Close()
	if err != nil {
		t.Fatal(err)
	}

	out = runSync(t)
	for _, want := range []string{"updated lena@example.com (name, numbers)", "deactivated mo@example.com (no longer in the directory)", "2 changed"} {
		if !strings.Contains(out, want) {
			t.Fatalf("third sync: %q missing from\n%s", want, out)
		}
	}
	if out := runSync(t); !strings.Contains(out, "0 changed") {
		t.Fatalf("fourth sync changed something:\n%s", out)
	}
	if _, err := store.PrincipalByTokenHash(ctx, hashOf(tok.Token), time.Now()); err == nil {
		t.Fatal("the token of a person who left still works")
	}
	users, _ = store.FindUsers(ctx, storage.UserQuery{Email: "lena@example.com"})
	if users[0].DisplayName != "Lena L. Ldap" || users[0].Numbers[1].Number != "+12025550149" {
		t.Fatalf("lena after the change = %+v", users[0])
	}
}

func newFlagSet() *flag.FlagSet { return flag.NewFlagSet("test", flag.ContinueOnError) }

func hashOf(s string) string { return controller.HashSecret(s) }
