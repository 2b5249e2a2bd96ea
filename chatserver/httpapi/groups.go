package httpapi

import (
	"net/http"

	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/groups"
)

// groupActions are the groups RPCs a backend may call as POST
// /api/groups/<action>, with the same JSON bodies as the RPCs. The API acts
// with an owner's rights (its audit entries name "api"); create needs
// "owner" and may add "members" at once.
var groupActions = map[string]string{
	"create": "group.create", "get": "group.get", "update": "group.update", "members": "group.members",
	"add": "group.add", "remove": "group.remove", "ban": "group.ban", "unban": "group.unban",
	"mute": "group.mute", "role": "group.role", "transfer": "group.transfer", "delete": "group.delete",
	"audit": "group.audit",
}

func (a *API) groups(w http.ResponseWriter, r *http.Request, body []byte) {
	method, ok := groupActions[r.PathValue("action")]
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]apiError{"error": {Code: codes.ErrMethodNotFound.Code, Message: "no such groups action"}})
		return
	}
	res, err := a.n.Groups().RPC(r.Context(), groups.Caller{System: true}, method, body)
	if err != nil {
		writeErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"result":`))
	_, _ = w.Write(res)
	_, _ = w.Write([]byte("}\n"))
}
