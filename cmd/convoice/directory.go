package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/convoice/convoice/controller"
	"github.com/convoice/convoice/ldapsync"
)

// ldapPeople maps directory entries onto people: mail → e-mail,
// displayName/cn → name, telephoneNumber → "work", mobile → "mobile" (the
// work number is the default when there is one).
func ldapPeople(entries []ldapsync.Entry) []controller.Person {
	out := make([]controller.Person, 0, len(entries))
	for _, e := range entries {
		p := controller.Person{ExternalID: e.ID, Email: e.Mail, DisplayName: e.Name, Active: true}
		if e.Telephone != "" {
			p.Numbers = append(p.Numbers, controller.NumberInput{Label: "work", Number: e.Telephone})
		}
		if e.Mobile != "" {
			p.Numbers = append(p.Numbers, controller.NumberInput{Label: "mobile", Number: e.Mobile})
		}
		out = append(out, p)
	}
	return out
}

// syncLDAP pulls the directory once and applies it.
func syncLDAP(ctx context.Context, ctl *controller.Controller, c ldapConfig) (controller.SyncResult, error) {
	entries, err := ldapsync.Fetch(ctx, ldapsync.Config{URL: c.URL, BindDN: c.BindDN, BindPassword: c.BindPassword,
		BaseDN: c.BaseDN, Filter: c.Filter})
	if err != nil {
		return controller.SyncResult{}, err
	}
	return ctl.Provisioning().Sync(ctx, controller.SourceLDAP, ldapPeople(entries))
}

func printSync(w io.Writer, res controller.SyncResult) {
	for _, c := range res.Changes {
		fmt.Fprintln(w, c.String())
	}
	for _, err := range res.Errors {
		fmt.Fprintln(w, "skipped", err)
	}
	fmt.Fprintf(w, "%d changed, %d skipped\n", len(res.Changes), len(res.Errors))
}

// runDirectory is `convoice directory sync`: one LDAP pull, printing what
// changed.
func runDirectory(args []string, out io.Writer) error {
	if len(args) == 0 || args[0] != "sync" {
		return errors.New("directory: want sync")
	}
	ctx := context.Background()
	fs := flag.NewFlagSet("directory sync", flag.ContinueOnError)
	ctl, store, cfg, err := openForAdmin(ctx, fs, args[1:])
	if err != nil {
		return err
	}
	defer store.Close()
	if cfg.Identity.LDAP.URL == "" {
		return errors.New("directory sync: CONVOICE_LDAP_URL is not set")
	}
	res, err := syncLDAP(ctx, ctl, cfg.Identity.LDAP)
	if err != nil {
		return err
	}
	printSync(out, res)
	return nil
}

// ldapLoop syncs at start and every interval until ctx is done.
func ldapLoop(ctx context.Context, ctl *controller.Controller, c ldapConfig, lg *slog.Logger) {
	t := time.NewTicker(c.Interval)
	defer t.Stop()
	for {
		res, err := syncLDAP(ctx, ctl, c)
		switch {
		case err != nil:
			lg.Warn("ldap sync failed; next try at the next interval", "err", err, "interval", c.Interval)
		case len(res.Changes) > 0 || len(res.Errors) > 0:
			for _, ch := range res.Changes {
				lg.Info("ldap sync", "change", ch.String())
			}
			for _, e := range res.Errors {
				lg.Warn("ldap sync skipped a person", "err", e)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
