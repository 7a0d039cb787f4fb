package ariemu

// causeText is Asterisk's ast_cause2str table (main/channel.c, 22.x): the
// cause_txt of ChannelDestroyed. Causes missing from it read "Unknown", as
// cause 0 does in recording d.
var causeText = map[int]string{
	1:   "Unallocated (unassigned) number",
	2:   "No route to specified transmit network",
	3:   "No route to destination",
	5:   "Misdialed trunk prefix",
	6:   "Channel unacceptable",
	7:   "Call awarded and being delivered in an established channel",
	8:   "Pre-empted",
	14:  "Number ported elsewhere",
	16:  "Normal Clearing",
	17:  "User busy",
	18:  "No user responding",
	19:  "User alerting, no answer",
	20:  "Subscriber absent",
	21:  "Call Rejected",
	22:  "Number changed",
	23:  "Redirected to new destination",
	26:  "Answered elsewhere",
	27:  "Destination out of order",
	28:  "Invalid number format",
	29:  "Facility rejected",
	30:  "Response to STATus ENQuiry",
	31:  "Normal, unspecified",
	34:  "Circuit/channel congestion",
	38:  "Network out of order",
	41:  "Temporary failure",
	42:  "Switching equipment congestion",
	43:  "Access information discarded",
	44:  "Requested channel not available",
	50:  "Facility not subscribed",
	52:  "Outgoing call barred",
	54:  "Incoming call barred",
	57:  "Bearer capability not authorized",
	58:  "Bearer capability not available",
	65:  "Bearer capability not implemented",
	66:  "Channel not implemented",
	69:  "Facility not implemented",
	81:  "Invalid call reference value",
	88:  "Incompatible destination",
	95:  "Invalid message unspecified",
	96:  "Mandatory information element is missing",
	97:  "Message type nonexist.",
	98:  "Wrong message",
	99:  "Info. element nonexist or not implemented",
	100: "Invalid information element contents",
	101: "Message not compatible with call state",
	102: "Recover on timer expiry",
	103: "Mandatory IE length error",
	111: "Protocol error, unspecified",
	127: "Interworking, unspecified",
}

func causeTxt(cause int) string {
	if t, ok := causeText[cause]; ok {
		return t
	}
	return "Unknown"
}

// causeToSIP is chan_pjsip's hangup_cause2sip: the SIP status Asterisk
// sends (and reports as tech_cause) when it ends an unanswered outbound call
// itself. Recording i: reason=busy gives tech_cause 486, reason_code=21
// gives 403, a plain DELETE (16) gives none; recording c: the originate
// timeout (19) gives 480.
func causeToSIP(cause int) int {
	switch cause {
	case 1, 2, 3:
		return 404
	case 34, 42, 66:
		return 503
	case 18:
		return 408
	case 19, 20, 31:
		return 480
	case 21:
		return 403
	case 22:
		return 410
	case 28:
		return 484
	case 17:
		return 486
	case 38, 127:
		return 500
	case 29:
		return 501
	case 27:
		return 502
	case 58:
		return 488
	}
	return 0
}

// dialStatus is ast_hangup_cause_to_dial_status: the dialstatus of the final
// Dial event of an unanswered call. Everything that is not busy, congestion
// or "unavailable" reads NOANSWER — which is why a 404 (cause 1) and a
// rejection (cause 21) say NOANSWER: trust the cause, not the dial status.
func dialStatus(cause int) string {
	switch cause {
	case 17:
		return "BUSY"
	case 34, 42:
		return "CONGESTION"
	case 3, 20:
		return "CHANUNAVAIL"
	}
	return "NOANSWER"
}

// hangupReasons maps DELETE /channels/{id}?reason= to a cause (22.x
// resource_channels.c, values from api-docs channels.json).
var hangupReasons = map[string]int{
	"normal":             16,
	"busy":               17,
	"congestion":         34,
	"no_answer":          19,
	"timeout":            18,
	"rejected":           21,
	"unallocated":        1,
	"normal_unspecified": 31,
	"number_incomplete":  28,
	"codec_mismatch":     58,
	"interworking":       127,
	"failure":            38,
	"answered_elsewhere": 26,
}

// Softhangup flags Asterisk puts in ChannelHangupRequest.cause: they are not
// Q.850 causes (README: "Soft hangups").
const (
	softhangupShutdown = 4  // core restart now
	softhangupExplicit = 32 // DELETE /channels/{id}
)
