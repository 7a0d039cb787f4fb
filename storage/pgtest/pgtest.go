// Package pgtest gives tests a database of their own on the PostgreSQL
// server named by CONVOICE_TEST_POSTGRES (a throw-away server: CI starts
// one with lab/pg-test-cluster.sh), so that suites run again on the same
// server start from empty tables.
package pgtest

import (
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
)

// Env is the variable that names the test server.
const Env = "CONVOICE_TEST_POSTGRES"

var seq atomic.Int64

// Fresh creates an empty database on the server of dsn and returns its
// DSN; it is dropped when the test ends.
func Fresh(t testing.TB, dsn string) string {
	t.Helper()
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	name := fmt.Sprintf("t_%d_%d_%d", time.Now().UnixNano(), os.Getpid(), seq.Add(1))
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		admin.Close()
		t.Fatalf("create database: %v", err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		admin.Close()
		t.Fatalf("%s: %v", Env, err)
	}
	u.Path = "/" + name
	t.Cleanup(func() {
		admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
		admin.Close()
	})
	return u.String()
}

// DSN is where a test's store lives: a fresh PostgreSQL database when
// CONVOICE_TEST_POSTGRES is set, else the SQLite file sqlitePath.
func DSN(t testing.TB, sqlitePath string) string {
	t.Helper()
	if pg := os.Getenv(Env); pg != "" {
		return Fresh(t, pg)
	}
	return sqlitePath
}

// WithParam adds a query parameter ("name=value") to a PostgreSQL DSN.
func WithParam(dsn, param string) string {
	if strings.Contains(dsn, "?") {
		return dsn + "&" + param
	}
	return dsn + "?" + param
}
