package ariemu

import "time"

// Event encoding and routing. Every event is encoded once, under s.mu, into
// s.ebuf up to its "asterisk_id"; each receiving application then gets its
// own copy ending in `,"application":"<app>"}`. Field order follows the
// recordings exactly, including the events whose first keys come before
// "type" (ChannelVarset, ChannelHangupRequest, ChannelTalkingFinished).

func (s *Server) appendChannel(b []byte, ch *channel) []byte {
	b = append(b, '{')
	b = appendStrField(b, "id", ch.id)
	b = append(b, ',')
	b = appendStrField(b, "name", ch.name)
	b = append(b, ',')
	b = appendStrField(b, "state", ch.state.String())
	b = append(b, ',')
	b = appendStrField(b, "protocol_id", ch.protocolID)
	b = append(b, `,"caller":{`...)
	b = appendStrField(b, "name", ch.callerName)
	b = append(b, ',')
	b = appendStrField(b, "number", ch.callerNum)
	b = append(b, `},"connected":{`...)
	if ch.connected {
		b = appendStrField(b, "name", ch.callerName)
		b = append(b, ',')
		b = appendStrField(b, "number", ch.callerNum)
	} else {
		b = append(b, `"name":"","number":""`...)
	}
	b = append(b, `},"accountcode":"","dialplan":{`...)
	b = appendStrField(b, "context", ch.context)
	b = append(b, ',')
	b = appendStrField(b, "exten", ch.exten)
	b = append(b, `,"priority":1,`...)
	appName, appData := s.dialplanApp(ch)
	b = appendStrField(b, "app_name", appName)
	b = append(b, ',')
	b = appendStrField(b, "app_data", appData)
	b = append(b, `},"creationtime":`...)
	b = appendAstTime(b, ch.created)
	return append(b, `,"language":"en"}`...)
}

func (s *Server) appendBridge(b []byte, br *bridge, tech string) []byte {
	b = append(b, '{')
	b = appendStrField(b, "id", br.id)
	b = append(b, ',')
	b = appendStrField(b, "technology", tech)
	b = append(b, ',')
	b = appendStrField(b, "bridge_type", br.typ)
	b = append(b, `,"bridge_class":"stasis","creator":"Stasis",`...)
	b = appendStrField(b, "name", br.name)
	b = append(b, `,"channels":[`...)
	for i, m := range br.members {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, m.id)
	}
	b = append(b, `],"creationtime":`...)
	b = appendAstTime(b, br.created)
	if br.typ == "holding" {
		return append(b, `,"video_mode":"none"}`...)
	}
	return append(b, `,"video_mode":"talker"}`...)
}

func (s *Server) appendApplication(b []byte, a *app) []byte {
	b = append(b, '{')
	b = appendStrField(b, "name", a.name)
	b = append(b, `,"channel_ids":[`...)
	n := 0
	for _, ch := range s.sortedChannels() {
		if ch.subscribed && ch.app == a.name {
			if n > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, ch.id)
			n++
		}
	}
	b = append(b, `],"bridge_ids":[`...)
	n = 0
	for _, br := range s.sortedBridges() {
		if br.subs[a.name] > 0 {
			if n > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, br.id)
			n++
		}
	}
	return append(b, `],"endpoint_ids":[],"device_names":[],"events_allowed":[],"events_disallowed":[]}`...)
}

func appendTypeTS(b []byte, typ string) []byte {
	b = appendStrField(b, "type", typ)
	b = append(b, `,"timestamp":`...)
	return appendAstTime(b, time.Now())
}

// evSend finishes the event and queues it for each application (deduped).
func (s *Server) evSend(b []byte, apps []string) {
	b = append(b, `,"asterisk_id":`...)
	b = appendJSONString(b, s.entityID)
	s.ebuf = b // keep the grown buffer for the next event
	for i, name := range apps {
		if name == "" || containsBefore(apps, i, name) {
			continue
		}
		a := s.apps[name]
		if a == nil {
			continue
		}
		ws := a.active()
		if ws == nil {
			continue // no websocket: the event is lost, as in Asterisk
		}
		msg := make([]byte, 0, len(b)+len(name)+20)
		msg = append(msg, b...)
		msg = append(msg, `,"application":`...)
		msg = appendJSONString(msg, name)
		msg = append(msg, '}')
		ws.push(msg)
	}
}

func containsBefore(list []string, i int, v string) bool {
	for _, x := range list[:i] {
		if x == v {
			return true
		}
	}
	return false
}

// chanApps: who hears about a channel — its application once the channel is
// subscribed (originated into an existing application, or in Stasis), plus
// every application with a subscribeAll websocket.
// evSendChannel ends a channel event with its "channel" object and sends it
// to the channel's applications.
func (s *Server) evSendChannel(b []byte, ch *channel) {
	b = append(b, `,"channel":`...)
	b = s.appendChannel(b, ch)
	s.evSend(b, s.chanApps(ch))
}

func (s *Server) chanApps(ch *channel) []string {
	apps := s.recip[:0]
	if ch.subscribed {
		apps = append(apps, ch.app)
	}
	for name := range s.subAll {
		apps = append(apps, name)
	}
	s.recip = apps
	return apps
}

func (s *Server) bridgeApps(br *bridge, ch *channel) []string {
	apps := s.recip[:0]
	if ch != nil && ch.subscribed {
		apps = append(apps, ch.app)
	}
	for name := range br.subs {
		apps = append(apps, name)
	}
	for name := range s.subAll {
		apps = append(apps, name)
	}
	s.recip = apps
	return apps
}

func (s *Server) chanEvent(typ string, ch *channel) {
	b := append(s.ebuf[:0], '{')
	b = appendTypeTS(b, typ)
	s.evSendChannel(b, ch)
}

func (s *Server) evStateChange(ch *channel)    { s.chanEvent("ChannelStateChange", ch) }
func (s *Server) evStasisEnd(ch *channel)      { s.chanEvent("StasisEnd", ch) }
func (s *Server) evTalkingStarted(ch *channel) { s.chanEvent("ChannelTalkingStarted", ch) }
func (s *Server) evConnectedLine(ch *channel)  { s.chanEvent("ChannelConnectedLine", ch) }
func (s *Server) evTalkingFinished(ch *channel, durationMs int) {
	b := append(s.ebuf[:0], '{')
	b = appendIntField(b, "duration", durationMs)
	b = append(b, ',')
	b = appendTypeTS(b, "ChannelTalkingFinished")
	s.evSendChannel(b, ch)
}

func (s *Server) evDial(ch *channel, status string) {
	b := append(s.ebuf[:0], '{')
	b = appendTypeTS(b, "Dial")
	b = append(b, ',')
	b = appendStrField(b, "dialstatus", status)
	b = append(b, `,"forward":"",`...)
	b = appendStrField(b, "dialstring", ch.dialstring)
	b = append(b, `,"peer":`...)
	b = s.appendChannel(b, ch)
	s.evSend(b, s.chanApps(ch))
}

func (s *Server) evVarset(ch *channel, variable, value string) {
	b := append(s.ebuf[:0], '{')
	b = appendStrField(b, "variable", variable)
	b = append(b, ',')
	b = appendStrField(b, "value", value)
	b = append(b, ',')
	b = appendTypeTS(b, "ChannelVarset")
	s.evSendChannel(b, ch)
}

func (s *Server) evStasisStart(ch *channel) {
	b := append(s.ebuf[:0], '{')
	b = appendTypeTS(b, "StasisStart")
	b = append(b, `,"args":`...)
	b = appendStringArray(b, splitAppArgs(ch.appArgs))
	s.evSendChannel(b, ch)
}

// evHangupRequest: cause 0 omits "cause" (far-end BYE, recording j);
// techCause 0 omits "tech_cause"; soft adds "soft":true.
func (s *Server) evHangupRequest(ch *channel, cause, techCause int, soft bool) {
	b := append(s.ebuf[:0], '{')
	if cause != 0 {
		b = appendIntField(b, "cause", cause)
		b = append(b, ',')
	}
	if techCause != 0 {
		b = appendIntField(b, "tech_cause", techCause)
		b = append(b, ',')
	}
	if soft {
		b = append(b, `"soft":true,`...)
	}
	b = appendTypeTS(b, "ChannelHangupRequest")
	s.evSendChannel(b, ch)
}

func (s *Server) evDestroyed(ch *channel, cause, techCause int) {
	b := append(s.ebuf[:0], '{')
	b = appendTypeTS(b, "ChannelDestroyed")
	b = append(b, ',')
	b = appendIntField(b, "cause", cause)
	b = append(b, ',')
	b = appendStrField(b, "cause_txt", causeTxt(cause))
	if techCause != 0 {
		b = append(b, ',')
		b = appendIntField(b, "tech_cause", techCause)
	}
	s.evSendChannel(b, ch)
}

func (s *Server) evCallerID(ch *channel) {
	b := append(s.ebuf[:0], '{')
	b = appendTypeTS(b, "ChannelCallerId")
	b = append(b, `,"caller_presentation":0,"caller_presentation_txt":"Presentation Allowed, Not Screened","channel":`...)
	b = s.appendChannel(b, ch)
	s.evSend(b, s.chanApps(ch))
}

// evBridgeChannel encodes the bridge with its technology before the
// membership change is re-evaluated (callers recompute afterwards).
func (s *Server) evBridgeChannel(typ string, br *bridge, ch *channel) {
	b := append(s.ebuf[:0], '{')
	b = appendTypeTS(b, typ)
	b = append(b, `,"bridge":`...)
	b = s.appendBridge(b, br, br.tech)
	b = append(b, `,"channel":`...)
	b = s.appendChannel(b, ch)
	s.evSend(b, s.bridgeApps(br, ch))
}

func (s *Server) evBridgeDestroyed(br *bridge) {
	b := append(s.ebuf[:0], '{')
	b = appendTypeTS(b, "BridgeDestroyed")
	b = append(b, `,"bridge":`...)
	b = s.appendBridge(b, br, br.tech)
	s.evSend(b, s.bridgeApps(br, nil))
}

// evChannelCreated goes to subscribeAll applications only: the channel's own
// application subscribes to it after its creation, so it never sees this
// event (recording a against extra/a_…_subscribe_all).
func (s *Server) evChannelCreated(ch *channel) {
	if len(s.subAll) == 0 {
		return
	}
	b := append(s.ebuf[:0], '{')
	b = appendTypeTS(b, "ChannelCreated")
	b = append(b, `,"channel":`...)
	b = s.appendChannel(b, ch)
	apps := s.recip[:0]
	for name := range s.subAll {
		apps = append(apps, name)
	}
	s.recip = apps
	s.evSend(b, apps)
}

func (s *Server) evBridgeCreated(br *bridge) {
	if len(s.subAll) == 0 {
		return
	}
	b := append(s.ebuf[:0], '{')
	b = appendTypeTS(b, "BridgeCreated")
	b = append(b, `,"bridge":`...)
	b = s.appendBridge(b, br, br.tech)
	s.evSend(b, s.bridgeApps(br, nil))
}

// splitAppArgs splits appArgs as Stasis() does: on commas, into StasisStart
// "args" (recording a: "phone1,leg-a" → ["phone1","leg-a"]).
func splitAppArgs(appArgs string) []string {
	if appArgs == "" {
		return []string{}
	}
	var out []string
	start := 0
	for i := 0; i < len(appArgs); i++ {
		if appArgs[i] == ',' {
			out = append(out, appArgs[start:i])
			start = i + 1
		}
	}
	return append(out, appArgs[start:])
}
