package ariemu

import "strings"

type handler func(s *Server, rc *reqCtx)

// route is one path of the ARI description with its methods. A nil handler
// is a documented operation the emulator does not model: it answers 501 so
// a client can tell "not emulated" from an Asterisk answer.
type route struct {
	pattern string
	segs    []string
	methods map[string]handler
}

func (rt *route) allow() string {
	var b strings.Builder
	b.WriteString("OPTIONS")
	for _, m := range []string{"GET", "POST", "PUT", "DELETE"} {
		if _, ok := rt.methods[m]; ok {
			b.WriteString("," + m)
		}
	}
	return b.String()
}

type routeDef struct {
	method, pattern string
	h               handler
}

// routeDefs lists every operation of testdata/asterisk/api-docs (the test
// TestRoutesCoverAPIDocs keeps the two in step).
var routeDefs = []routeDef{
	{"GET", "/applications", (*Server).handleAppList},
	{"GET", "/applications/{applicationName}", (*Server).handleAppGet},
	{"POST", "/applications/{applicationName}/subscription", nil},
	{"DELETE", "/applications/{applicationName}/subscription", nil},
	{"PUT", "/applications/{applicationName}/eventFilter", nil},

	{"GET", "/asterisk/config/dynamic/{configClass}/{objectType}/{id}", nil},
	{"PUT", "/asterisk/config/dynamic/{configClass}/{objectType}/{id}", nil},
	{"DELETE", "/asterisk/config/dynamic/{configClass}/{objectType}/{id}", nil},
	{"GET", "/asterisk/info", (*Server).handleInfo},
	{"GET", "/asterisk/ping", (*Server).handlePing},
	{"GET", "/asterisk/modules", nil},
	{"GET", "/asterisk/modules/{moduleName}", nil},
	{"POST", "/asterisk/modules/{moduleName}", nil},
	{"DELETE", "/asterisk/modules/{moduleName}", nil},
	{"PUT", "/asterisk/modules/{moduleName}", nil},
	{"GET", "/asterisk/logging", nil},
	{"POST", "/asterisk/logging/{logChannelName}", nil},
	{"DELETE", "/asterisk/logging/{logChannelName}", nil},
	{"PUT", "/asterisk/logging/{logChannelName}/rotate", nil},
	{"GET", "/asterisk/variable", nil},
	{"POST", "/asterisk/variable", nil},

	{"GET", "/bridges", (*Server).handleBridgeList},
	{"POST", "/bridges", (*Server).handleBridgeCreate},
	{"POST", "/bridges/{bridgeId}", (*Server).handleBridgeCreate},
	{"GET", "/bridges/{bridgeId}", (*Server).handleBridgeGet},
	{"DELETE", "/bridges/{bridgeId}", (*Server).handleBridgeDestroy},
	{"GET", "/bridges/{bridgeId}/variable", nil},
	{"POST", "/bridges/{bridgeId}/variable", nil},
	{"GET", "/bridges/{bridgeId}/variables", nil},
	{"POST", "/bridges/{bridgeId}/variables", nil},
	{"POST", "/bridges/{bridgeId}/addChannel", (*Server).handleAddChannel},
	{"POST", "/bridges/{bridgeId}/removeChannel", (*Server).handleRemoveChannel},
	{"POST", "/bridges/{bridgeId}/videoSource/{channelId}", nil},
	{"DELETE", "/bridges/{bridgeId}/videoSource", nil},
	{"POST", "/bridges/{bridgeId}/moh", (*Server).handleBridgeNoop},
	{"DELETE", "/bridges/{bridgeId}/moh", (*Server).handleBridgeNoop},
	{"POST", "/bridges/{bridgeId}/play", nil},
	{"POST", "/bridges/{bridgeId}/play/{playbackId}", nil},
	{"POST", "/bridges/{bridgeId}/record", nil},

	{"GET", "/channels", (*Server).handleChannelList},
	{"POST", "/channels", (*Server).handleOriginate},
	{"POST", "/channels/create", nil},
	{"GET", "/channels/{channelId}", (*Server).handleChannelGet},
	{"POST", "/channels/{channelId}", (*Server).handleOriginate},
	{"DELETE", "/channels/{channelId}", (*Server).handleHangup},
	{"POST", "/channels/{channelId}/continue", nil},
	{"POST", "/channels/{channelId}/move", nil},
	{"POST", "/channels/{channelId}/redirect", nil},
	{"POST", "/channels/{channelId}/answer", (*Server).handleChannelNoop},
	{"POST", "/channels/{channelId}/ring", (*Server).handleChannelNoop},
	{"DELETE", "/channels/{channelId}/ring", (*Server).handleChannelNoop},
	{"POST", "/channels/{channelId}/progress", (*Server).handleChannelNoop},
	{"POST", "/channels/{channelId}/dtmf", (*Server).handleDTMF},
	{"POST", "/channels/{channelId}/mute", (*Server).handleMute},
	{"DELETE", "/channels/{channelId}/mute", (*Server).handleMute},
	{"POST", "/channels/{channelId}/hold", (*Server).handleChannelNoop},
	{"DELETE", "/channels/{channelId}/hold", (*Server).handleChannelNoop},
	{"POST", "/channels/{channelId}/moh", (*Server).handleChannelNoop},
	{"DELETE", "/channels/{channelId}/moh", (*Server).handleChannelNoop},
	{"POST", "/channels/{channelId}/silence", (*Server).handleChannelNoop},
	{"DELETE", "/channels/{channelId}/silence", (*Server).handleChannelNoop},
	{"POST", "/channels/{channelId}/play", (*Server).handlePlay},
	{"POST", "/channels/{channelId}/play/{playbackId}", (*Server).handlePlay},
	{"POST", "/channels/{channelId}/record", nil},
	{"GET", "/channels/{channelId}/variable", (*Server).handleGetVar},
	{"POST", "/channels/{channelId}/variable", (*Server).handleSetVar},
	{"GET", "/channels/{channelId}/variables", nil},
	{"POST", "/channels/{channelId}/variables", nil},
	{"POST", "/channels/{channelId}/snoop", nil},
	{"POST", "/channels/{channelId}/snoop/{snoopId}", nil},
	{"POST", "/channels/{channelId}/dial", nil},
	{"GET", "/channels/{channelId}/rtp_statistics", nil},
	{"POST", "/channels/externalMedia", nil},
	{"POST", "/channels/{channelId}/transfer_progress", nil},

	{"GET", "/deviceStates", nil},
	{"GET", "/deviceStates/{deviceName}", nil},
	{"PUT", "/deviceStates/{deviceName}", nil},
	{"DELETE", "/deviceStates/{deviceName}", nil},

	{"GET", "/endpoints", nil},
	{"PUT", "/endpoints/sendMessage", nil},
	{"POST", "/endpoints/refer", nil},
	{"GET", "/endpoints/{tech}", nil},
	{"GET", "/endpoints/{tech}/{resource}", nil},
	{"PUT", "/endpoints/{tech}/{resource}/sendMessage", nil},
	{"POST", "/endpoints/{tech}/{resource}/refer", nil},

	{"GET", "/events", (*Server).handleEvents},
	{"POST", "/events/user/{eventName}", nil},
	{"POST", "/events/claim", nil},

	{"GET", "/mailboxes", nil},
	{"GET", "/mailboxes/{mailboxName}", nil},
	{"PUT", "/mailboxes/{mailboxName}", nil},
	{"DELETE", "/mailboxes/{mailboxName}", nil},

	{"GET", "/playbacks/{playbackId}", (*Server).handlePlaybackGet},
	{"DELETE", "/playbacks/{playbackId}", (*Server).handlePlaybackStop},
	{"POST", "/playbacks/{playbackId}/control", nil},

	{"GET", "/recordings/stored", nil},
	{"GET", "/recordings/stored/{recordingName}", nil},
	{"DELETE", "/recordings/stored/{recordingName}", nil},
	{"GET", "/recordings/stored/{recordingName}/file", nil},
	{"POST", "/recordings/stored/{recordingName}/copy", nil},
	{"GET", "/recordings/live/{recordingName}", nil},
	{"DELETE", "/recordings/live/{recordingName}", nil},
	{"POST", "/recordings/live/{recordingName}/stop", nil},
	{"POST", "/recordings/live/{recordingName}/pause", nil},
	{"DELETE", "/recordings/live/{recordingName}/pause", nil},
	{"POST", "/recordings/live/{recordingName}/mute", nil},
	{"DELETE", "/recordings/live/{recordingName}/mute", nil},

	{"GET", "/sounds", nil},
	{"GET", "/sounds/{soundId}", nil},
}

var routes = buildRoutes(routeDefs)

func buildRoutes(defs []routeDef) []*route {
	byPattern := map[string]*route{}
	var out []*route
	for _, d := range defs {
		rt := byPattern[d.pattern]
		if rt == nil {
			rt = &route{pattern: d.pattern, segs: strings.Split(strings.TrimPrefix(d.pattern, "/"), "/"), methods: map[string]handler{}}
			byPattern[d.pattern] = rt
			out = append(out, rt)
		}
		rt.methods[d.method] = d.h
	}
	return out
}

// matchRoute walks the path like Asterisk's handler tree: at each level a
// literal child wins over the wildcard ("/channels/create" is not a channel
// id).
func matchRoute(segs []string) (*route, map[string]string) {
	var best *route
	bestScore := -1
	for _, rt := range routes {
		if len(rt.segs) != len(segs) {
			continue
		}
		score := 0
		ok := true
		for i, p := range rt.segs {
			if strings.HasPrefix(p, "{") {
				continue
			}
			if p != segs[i] {
				ok = false
				break
			}
			// Earlier literal segments weigh more, as the tree decides
			// level by level.
			score += 1 << (len(segs) - i)
		}
		if ok && score > bestScore {
			best, bestScore = rt, score
		}
	}
	if best == nil {
		return nil, nil
	}
	vars := map[string]string{}
	for i, p := range best.segs {
		if strings.HasPrefix(p, "{") {
			vars[strings.Trim(p, "{}")] = segs[i]
		}
	}
	return best, vars
}
