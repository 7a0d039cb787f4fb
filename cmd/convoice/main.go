// Command convoice adds audio to IM and desktop-sharing conversations by
// having the company's PBX call the participants.
//
//	convoice [serve]          run the service (default)
//	convoice user add|list|token
//	convoice seed             create the demo directory
//	convoice emulate asterisk|freeswitch --listen ADDR
package main

import (
	"fmt"
	"os"
)

const usage = `convoice — audio for IM and desktop-sharing conversations, dialed by your PBX

usage:
  convoice [serve] [flags]                 run the service (flags: convoice serve -h)
  convoice user add --name N --email E [--number label=number]… [--admin]
  convoice user list
  convoice user token EMAIL|ID             issue a new API token
  convoice seed                            create the demo directory and print sign-in links
  convoice directory sync                  pull the LDAP directory once (CONVOICE_LDAP_*) and print what changed
  convoice emulate asterisk --listen 127.0.0.1:8088    run the ARI emulator as its own process
  convoice emulate freeswitch --listen 127.0.0.1:8021  run the event-socket emulator

Configuration comes from CONVOICE_* environment variables (see README.md).
`

func main() {
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = runServe(args)
	case "user":
		err = runUser(args)
	case "seed":
		err = runSeed(args)
	case "directory":
		err = runDirectory(args, os.Stdout)
	case "emulate":
		err = runEmulate(args)
	case "help", "-h", "--help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "convoice: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "convoice:", err)
		os.Exit(1)
	}
}
