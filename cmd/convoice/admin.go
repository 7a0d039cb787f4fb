package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/convoice/convoice/controller"
	"github.com/convoice/convoice/emulator/ariemu"
	"github.com/convoice/convoice/emulator/eslemu"
	"github.com/convoice/convoice/storage"
)

// admin is the actor of the command line: whoever can run convoice on the
// server machine administers it.
var admin = controller.Actor{Admin: true, Name: "command line"}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func openForAdmin(ctx context.Context, fs *flag.FlagSet, args []string) (*controller.Controller, *storage.Store, config, error) {
	cfg, err := loadConfig(fs, args)
	if err != nil {
		return nil, nil, cfg, err
	}
	store, err := storage.Open(ctx, cfg.DB, storage.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, nil, cfg, err
	}
	ctl := controller.New(controller.Config{Region: cfg.Region}, store, controller.NewHub(), nil, nil)
	return ctl, store, cfg, nil
}

func runUser(args []string) error {
	if len(args) == 0 {
		return errors.New("user: want add, list or token")
	}
	ctx := context.Background()
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("user "+sub, flag.ContinueOnError)
	switch sub {
	case "add":
		var name, email string
		var nums multiFlag
		var isAdmin bool
		fs.StringVar(&name, "name", "", "display name")
		fs.StringVar(&email, "email", "", "e-mail address")
		fs.Var(&nums, "number", "label=number (work, mobile, home, other); repeat; the first is the default")
		fs.BoolVar(&isAdmin, "admin", false, "give the admin role")
		ctl, store, _, err := openForAdmin(ctx, fs, args)
		if err != nil {
			return err
		}
		defer store.Close()
		in := controller.NewUser{DisplayName: name, Email: email}
		if isAdmin {
			in.Role = storage.RoleAdmin
		}
		for _, n := range nums {
			label, number, ok := strings.Cut(n, "=")
			if !ok {
				return fmt.Errorf("--number %q: want label=number", n)
			}
			in.Numbers = append(in.Numbers, controller.NumberInput{Label: label, Number: number})
		}
		u, err := ctl.CreateUser(ctx, admin, in)
		if err != nil {
			return err
		}
		tok, err := ctl.IssueToken(ctx, admin, u.ID, "created by convoice user add")
		if err != nil {
			return err
		}
		fmt.Printf("user %s (%s) created\nid:    %s\ntoken: %s\n", u.DisplayName, u.Email, u.ID, tok.Token)
		return nil
	case "list":
		ctl, store, _, err := openForAdmin(ctx, fs, args)
		if err != nil {
			return err
		}
		defer store.Close()
		us, err := ctl.ListUsers(ctx, admin)
		if err != nil {
			return err
		}
		for _, u := range us {
			var ns []string
			for _, n := range u.Numbers {
				ns = append(ns, n.Label+"="+n.Number)
			}
			fmt.Printf("%s\t%s\t%s\t%s\t%s\n", u.ID, u.Email, u.DisplayName, u.Role, strings.Join(ns, " "))
		}
		return nil
	case "token":
		ctl, store, _, err := openForAdmin(ctx, fs, args)
		if err != nil {
			return err
		}
		defer store.Close()
		if fs.NArg() != 1 {
			return errors.New("user token: give the user's e-mail or id")
		}
		who := fs.Arg(0)
		us, err := ctl.ListUsers(ctx, admin)
		if err != nil {
			return err
		}
		for _, u := range us {
			if u.ID == who || strings.EqualFold(u.Email, who) {
				tok, err := ctl.IssueToken(ctx, admin, u.ID, "issued by convoice user token")
				if err != nil {
					return err
				}
				fmt.Println(tok.Token)
				return nil
			}
		}
		return fmt.Errorf("no user %q", who)
	}
	return fmt.Errorf("user: unknown subcommand %q (want add, list or token)", sub)
}

func runSeed(args []string) error {
	ctx := context.Background()
	fs := flag.NewFlagSet("seed", flag.ContinueOnError)
	ctl, store, cfg, err := openForAdmin(ctx, fs, args)
	if err != nil {
		return err
	}
	defer store.Close()
	return seedDemo(ctx, ctl, cfg.PublicURL, os.Stdout)
}

// demoPeople reach every emulator outcome (API-CONTRACT.md "The emulator's
// phones"): ordinary numbers answer after ~300 ms; Frank's work phone is
// busy (0486), Grace's never answers (0480), Heidi's rejects (0603).
var demoPeople = []controller.NewUser{
	{DisplayName: "Alice Archer", Email: "alice@example.com", Numbers: []controller.NumberInput{
		{Label: "work", Number: "+1 202 555 0101", Default: true}, {Label: "mobile", Number: "+1 202 555 0102"}}},
	{DisplayName: "Bob Baker", Email: "bob@example.com", Numbers: []controller.NumberInput{
		{Label: "work", Number: "+1 202 555 0111", Default: true}, {Label: "mobile", Number: "+1 202 555 0112"}}},
	{DisplayName: "Carol Chen", Email: "carol@example.com", Numbers: []controller.NumberInput{
		{Label: "work", Number: "+1 202 555 0121", Default: true}, {Label: "mobile", Number: "+1 202 555 0122"}}},
	{DisplayName: "Dave Diaz", Email: "dave@example.com", Numbers: []controller.NumberInput{
		{Label: "work", Number: "+1 202 555 0131", Default: true}}},
	{DisplayName: "Erin Evans", Email: "erin@example.com", Numbers: []controller.NumberInput{
		{Label: "work", Number: "+1 202 555 0141", Default: true}}},
	{DisplayName: "Frank Busy", Email: "frank@example.com", Numbers: []controller.NumberInput{
		{Label: "work", Number: "+1 202 555 0486", Default: true}, {Label: "mobile", Number: "+1 202 555 0152"}}},
	{DisplayName: "Grace Noanswer", Email: "grace@example.com", Numbers: []controller.NumberInput{
		{Label: "work", Number: "+1 202 555 0480", Default: true}}},
	{DisplayName: "Heidi Rejects", Email: "heidi@example.com", Numbers: []controller.NumberInput{
		{Label: "work", Number: "+1 202 555 0603", Default: true}}},
}

// seedDemo creates the demo directory: people, contacts (everyone knows
// everyone), one IM conversation, and prints a sign-in link per person.
func seedDemo(ctx context.Context, ctl *controller.Controller, publicURL string, w io.Writer) error {
	var ids []string
	var tokens []string
	for _, p := range demoPeople {
		u, err := ctl.CreateUser(ctx, admin, p)
		if err != nil {
			return fmt.Errorf("%s: %w", p.Email, err)
		}
		tok, err := ctl.IssueToken(ctx, admin, u.ID, "demo")
		if err != nil {
			return err
		}
		ids = append(ids, u.ID)
		tokens = append(tokens, tok.Token)
	}
	for i, id := range ids {
		a := controller.Actor{UserID: id, Name: demoPeople[i].DisplayName}
		var others []string
		for _, o := range ids {
			if o != id {
				others = append(others, o)
			}
		}
		if _, err := ctl.SetContacts(ctx, a, others); err != nil {
			return err
		}
	}
	alice := controller.Actor{UserID: ids[0], Name: demoPeople[0].DisplayName}
	conv, err := ctl.CreateConversation(ctx, alice, controller.NewConversation{Kind: "im", Subject: "Quarterly planning",
		Participants: []string{ids[1], ids[2], ids[3]}})
	if err != nil {
		return err
	}
	if _, err := ctl.PostMessage(ctx, alice, conv.ID, "Shall we talk it through? I'll add audio."); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nDemo directory created. Sign in as (open in separate browser windows):\n")
	for i, p := range demoPeople {
		fmt.Fprintf(w, "  %-15s %s/#token=%s\n", p.DisplayName, publicURL, tokens[i])
	}
	fmt.Fprintf(w, "API example:\n  curl -H 'Authorization: Bearer %s' %s/api/v1/conversations\n\n", tokens[0], publicURL)
	return nil
}

func runEmulate(args []string) error {
	if len(args) == 0 {
		return errors.New("emulate: want asterisk or freeswitch")
	}
	kind, args := args[0], args[1:]
	fs := flag.NewFlagSet("emulate "+kind, flag.ContinueOnError)
	var listen, user string
	switch kind {
	case "asterisk":
		fs.StringVar(&listen, "listen", "127.0.0.1:8088", "address of the emulated ARI (serves /ari)")
		fs.StringVar(&user, "user", env("CONVOICE_ARI_USER", ""), "ARI user (empty: no auth); password from CONVOICE_ARI_PASSWORD(_FILE)")
	case "freeswitch":
		fs.StringVar(&listen, "listen", "127.0.0.1:8021", "address of the emulated event socket")
	default:
		return fmt.Errorf("emulate: unknown PBX %q (want asterisk or freeswitch)", kind)
	}
	format := fs.String("log-format", "text", "json or text")
	if err := fs.Parse(args); err != nil {
		return err
	}
	lg := newLogger(*format, "info")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	switch kind {
	case "asterisk":
		pass, err := secret("CONVOICE_ARI_PASSWORD")
		if err != nil {
			return err
		}
		lg.Warn("*** PBX EMULATOR: this is not a real Asterisk; no phone will ring ***", "listen", listen)
		return ariemu.Serve(ctx, listen, ariemu.Config{User: user, Password: pass, Logger: lg})
	default:
		pass, err := secret("CONVOICE_ESL_PASSWORD")
		if err != nil {
			return err
		}
		if pass == "" {
			pass = "ClueCon"
		}
		lg.Warn("*** PBX EMULATOR: this is not a real FreeSWITCH; no phone will ring ***", "listen", listen)
		return eslemu.Serve(ctx, listen, eslemu.Config{Password: pass, Logger: lg})
	}
}
