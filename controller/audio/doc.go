// Package audio is the conferences as people ask for them: Join Conference
// Now Using, the conference view, ending it, invitations and their
// answers, Invite Someone, mute and hang up. Placing and following the
// calls is the engine's; nothing here talks to a PBX.
package audio
