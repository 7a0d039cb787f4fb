package freeswitch

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/convoice/convoice/pbx"
)

// ---- resync ---------------------------------------------------------------

// Snapshot reads what FreeSWITCH holds of ours: "show channels as json"
// for the calls, "conference json_list" for the rooms and members.
func (d *Driver) Snapshot(ctx context.Context) (pbx.Snapshot, error) {
	c, err := d.current()
	if err != nil {
		return pbx.Snapshot{}, err
	}
	return d.snapshotOn(ctx, c)
}

type channelRow struct {
	UUID            string `json:"uuid"`
	CallState       string `json:"callstate"`
	Application     string `json:"application"`
	ApplicationData string `json:"application_data"`
}

type roomInfo struct {
	Name    string `json:"conference_name"`
	Members []struct {
		ID    int    `json:"id"`
		UUID  string `json:"uuid"`
		Flags struct {
			CanSpeak bool `json:"can_speak"`
		} `json:"flags"`
	} `json:"members"`
}

func parseRooms(body string) ([]roomInfo, error) {
	var rooms []roomInfo
	if err := json.Unmarshal([]byte(body), &rooms); err != nil {
		return nil, fmt.Errorf("conference json_list: %v", err)
	}
	return rooms, nil
}

func (d *Driver) snapshotOn(ctx context.Context, c *eslConn) (pbx.Snapshot, error) {
	snap := pbx.Snapshot{At: time.Now()}
	body, err := apiOn(ctx, c, "show channels as json")
	if err != nil {
		return snap, err
	}
	var chans struct {
		Rows []channelRow `json:"rows"`
	}
	if err := json.Unmarshal([]byte(body), &chans); err != nil {
		return snap, fmt.Errorf("%w: show channels as json: %v", pbx.ErrUnavailable, err)
	}
	body, err = apiOn(ctx, c, "conference json_list")
	if err != nil {
		return snap, err
	}
	rooms, err := parseRooms(body)
	if err != nil {
		return snap, fmt.Errorf("%w: %v", pbx.ErrUnavailable, err)
	}
	type membership struct {
		room  string
		id    int
		muted bool
	}
	members := map[string]membership{}
	for _, r := range rooms {
		for _, m := range r.Members {
			members[m.UUID] = membership{r.Name, m.ID, !m.Flags.CanSpeak}
		}
	}
	confs := map[string]bool{}
	for _, row := range chans.Rows {
		d.mu.Lock()
		l := d.legs[row.UUID]
		conf := ""
		if l != nil && !l.ended {
			conf = l.conf
		}
		d.mu.Unlock()
		if l == nil {
			// Not one we remember (convoice restarted?): ours if it
			// carries our tag.
			node, err := apiOn(ctx, c, "uuid_getvar "+row.UUID+" "+varNode)
			if err != nil {
				return snap, err
			}
			if strings.TrimSpace(node) != d.cfg.Node {
				continue
			}
			conf, err = apiOn(ctx, c, "uuid_getvar "+row.UUID+" "+varConf)
			if err != nil {
				return snap, err
			}
			conf = strings.TrimSpace(conf)
			if conf == "_undef_" || strings.HasPrefix(conf, "-ERR") {
				conf = ""
			}
		} else if l.ended {
			continue
		}
		ls := pbx.LegSnapshot{LegID: row.UUID, ConferenceID: conf,
			Answered: row.CallState == "ACTIVE" || row.CallState == "HELD"}
		if m, ok := members[row.UUID]; ok {
			ls.InConference, ls.Muted = true, m.muted
			if ls.ConferenceID == "" {
				ls.ConferenceID = m.room
			}
		}
		if ls.ConferenceID != "" && ls.InConference {
			confs[ls.ConferenceID] = true
		}
		snap.Legs = append(snap.Legs, ls)
	}
	for _, r := range rooms {
		if confs[r.Name] {
			snap.Conferences = append(snap.Conferences, r.Name)
		}
	}
	// Member ids for SetMute.
	d.mu.Lock()
	for _, ls := range snap.Legs {
		if l := d.legs[ls.LegID]; l != nil && !l.ended {
			if m, ok := members[ls.LegID]; ok {
				l.member = fmt.Sprint(m.id)
			}
		}
	}
	d.mu.Unlock()
	return snap, nil
}

// reconcile brings the leg table in line with a snapshot taken after a
// (re)connect and tells the controller what it missed: legs that rang,
// joined or vanished while the link was down. restart, when not empty,
// says FreeSWITCH is another process than before (a new Core-UUID): every
// call we knew is gone with the old one, EventPBXRestarted. A reconnect
// to the same process never is a restart, even when none of our calls is
// left. Dispatcher goroutine only.
func (d *Driver) reconcile(snap pbx.Snapshot, reconnect bool, restart string) {
	now := time.Now()
	have := map[string]pbx.LegSnapshot{}
	for _, ls := range snap.Legs {
		have[ls.LegID] = ls
	}
	var out []pbx.Event
	d.mu.Lock()
	var live []*leg
	for _, l := range d.legs {
		if !l.ended {
			live = append(live, l)
		}
	}
	if restart != "" {
		for _, l := range live {
			l.ended, l.endedAt = true, now
		}
		d.mu.Unlock()
		d.log.Warn("FreeSWITCH restarted: every call of ours is gone", "why", restart, "calls", len(live))
		d.emit(pbx.Event{Type: pbx.EventPBXRestarted, Reason: restart, At: now})
		return
	}
	for _, l := range live {
		ls, ok := have[l.id]
		if l.abandoned {
			if ok {
				go d.killAbandoned(l.id)
			} else if reconnect {
				l.ended = true
			}
			continue
		}
		if l.killOnSight {
			if ok {
				l.seen = true
				d.killPendingLocked(l)
			}
			continue // its end is reported by its events or its job
		}
		if !ok {
			if reconnect {
				out = append(out, d.endLocked(l, 0, "", "gone from FreeSWITCH while the event link was down", now))
			}
			continue
		}
		if ls.Answered {
			l.answered = true
		}
		l.inConf, l.muted = ls.InConference, ls.Muted
		out = append(out, d.connectedLocked(l, now)...)
	}
	for id, ls := range have {
		if d.legs[id] == nil {
			d.legs[id] = &leg{id: id, conf: ls.ConferenceID, answered: ls.Answered, inConf: ls.InConference,
				muted: ls.Muted, ringing: !ls.Answered, connected: ls.Answered && ls.InConference}
		}
	}
	d.mu.Unlock()
	for _, e := range out {
		d.emit(e)
	}
}
