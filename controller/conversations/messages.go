package conversations

import (
	"context"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/storage"
)

// PostMessage adds an IM message from the caller.
func (cv *Conversations) PostMessage(ctx context.Context, a core.Actor, convID, text string) (MessageView, error) {
	conv, _, err := core.Member(ctx, cv.store, a, convID)
	if err != nil {
		return MessageView{}, err
	}
	if conv.EndedAt != nil {
		return MessageView{}, core.Conflict("conversation_ended", "the conversation has ended")
	}
	text, err = MessageText(text)
	if err != nil {
		return MessageView{}, err
	}
	u, err := cv.store.GetUser(ctx, a.UserID)
	if err != nil {
		return MessageView{}, err
	}
	uid := a.UserID
	m := &storage.Message{ConversationID: conv.ID, UserID: &uid, AuthorName: u.DisplayName, Text: text, CreatedAt: time.Now().UTC()}
	err = cv.store.InTx(ctx, func(tx *storage.Store) error {
		if err := tx.CreateMessage(ctx, m); err != nil {
			return err
		}
		return core.AppendEvent(ctx, tx, conv.ID, "message.created", MessageViewOf(m))
	})
	if err != nil {
		return MessageView{}, err
	}
	return MessageViewOf(m), nil
}

// MessagePage is one page of messages.
type MessagePage struct {
	Messages   []MessageView `json:"messages"`
	NextCursor string        `json:"next_cursor"`
}

// MessageQuery selects a page of messages: cursor is the next_cursor of the
// previous page ("" for the first), Limit the page size (0: 50), Newest
// pages from the newest message back instead of from the oldest on (a
// long conversation opens on its latest messages).
type MessageQuery struct {
	Cursor string
	Limit  int
	Newest bool
}

// ListMessages pages through a conversation's messages.
func (cv *Conversations) ListMessages(ctx context.Context, a core.Actor, convID string, q MessageQuery) (MessagePage, error) {
	if _, _, err := core.Member(ctx, cv.store, a, convID); err != nil {
		return MessagePage{}, err
	}
	return cv.MessagesFrom(ctx, convID, 0, q)
}

// MessagesFrom reads one page of a conversation's messages after (or, with
// q.Newest, before) the cursor, never at or before floor (a guest sees
// nothing from before they joined).
func (cv *Conversations) MessagesFrom(ctx context.Context, convID string, floor int64, q MessageQuery) (MessagePage, error) {
	var cur int64
	if q.Cursor != "" {
		v, err := strconv.ParseInt(q.Cursor, 10, 64)
		if err != nil || v < 0 {
			return MessagePage{}, core.Invalid("cursor", "cursor: %q is not a cursor from this API", q.Cursor)
		}
		cur = v
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 50
	}
	if limit > 500 {
		return MessagePage{}, core.Invalid("limit", "limit: at most 500")
	}
	var ms []storage.Message
	var more bool
	var err error
	if q.Newest {
		ms, more, err = cv.store.MessagesBefore(ctx, convID, floor, cur, limit)
	} else {
		ms, more, err = cv.store.Messages(ctx, convID, max(floor, cur), limit)
	}
	if err != nil {
		return MessagePage{}, err
	}
	page := MessagePage{Messages: make([]MessageView, 0, len(ms))}
	for i := range ms {
		page.Messages = append(page.Messages, MessageViewOf(&ms[i]))
	}
	if more {
		page.NextCursor = strconv.FormatInt(ms[len(ms)-1].ID, 10)
	}
	return page, nil
}

// EventsAfter reads a conversation's stored log after seq (stream replay).
func (cv *Conversations) EventsAfter(ctx context.Context, convID string, after int64, limit int) ([]core.Event, error) {
	return cv.store.EventsAfter(ctx, convID, after, limit)
}

// LastEventSeq is the seq of a conversation's newest stored event (0: none).
func (cv *Conversations) LastEventSeq(ctx context.Context, convID string) (int64, error) {
	return cv.store.LastEventSeq(ctx, convID)
}

// MessageText is a message's text as stored (trailing blanks dropped), or
// why it cannot be posted.
func MessageText(text string) (string, error) {
	text = strings.TrimRight(text, " \t\r\n")
	if strings.TrimSpace(text) == "" {
		return "", core.Invalid("text", "text: the message is empty")
	}
	if utf8.RuneCountInString(text) > maxMessage {
		return "", core.Invalid("text", "text: at most %d characters", maxMessage)
	}
	return text, nil
}
