package session_test

import "github.com/parley-chat/parley/chatserver/node"

func nodePublishOptions() node.PublishOptions { return node.PublishOptions{} }
