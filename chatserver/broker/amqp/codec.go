package amqp

import (
	"errors"
	"fmt"

	"github.com/centrifugal/protocol"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/parley-chat/parley/chatserver/message"
)

// The body of a publication is a protobuf-encoded protocol.Publication
// (centrifugal/protocol v0.23.1: data, info, offset, tags, time); of a join or
// leave a protobuf-encoded protocol.ClientInfo. The channel and the stream
// position travel in headers, so a node can filter before decoding.
const contentTypeProtobuf = "application/x-protobuf"

func toProtoInfo(i *message.ClientInfo) *protocol.ClientInfo {
	if i == nil {
		return nil
	}
	return &protocol.ClientInfo{User: i.User, Client: i.Client, ConnInfo: i.ConnInfo, ChanInfo: i.ChanInfo}
}

func fromProtoInfo(i *protocol.ClientInfo) *message.ClientInfo {
	if i == nil {
		return nil
	}
	return &message.ClientInfo{User: i.User, Client: i.Client, ConnInfo: i.ConnInfo, ChanInfo: i.ChanInfo}
}

func encodePublication(channel string, pub *message.Publication, sp message.StreamPosition) (amqp.Publishing, error) {
	body, err := marshalPublication(pub)
	if err != nil {
		return amqp.Publishing{}, err
	}
	return publicationMessage(channel, sp, body), nil
}

func marshalPublication(pub *message.Publication) ([]byte, error) {
	body, err := (&protocol.Publication{
		Data:   pub.Data,
		Info:   toProtoInfo(pub.Info),
		Offset: pub.Offset,
		Tags:   pub.Tags,
		Time:   pub.Time,
	}).MarshalCF()
	if err != nil {
		return nil, fmt.Errorf("amqp broker: encode publication: %w", err)
	}
	return body, nil
}

// publicationMessage wraps an encoded publication (marshalPublication).
func publicationMessage(channel string, sp message.StreamPosition, body []byte) amqp.Publishing {
	return amqp.Publishing{
		Type:         TypePublication,
		ContentType:  contentTypeProtobuf,
		DeliveryMode: amqp.Transient,
		Headers: amqp.Table{
			HeaderChannel: channel,
			HeaderEpoch:   sp.Epoch,
			HeaderOffset:  int64(sp.Offset),
		},
		Body: body,
	}
}

func decodePublication(d *amqp.Delivery) (*message.Publication, message.StreamPosition, error) {
	var sp message.StreamPosition
	pub, err := unmarshalPublication(d.Body)
	if err != nil {
		return nil, sp, err
	}
	sp.Epoch, _ = d.Headers[HeaderEpoch].(string)
	switch off := d.Headers[HeaderOffset].(type) {
	case int64:
		if off < 0 {
			return nil, sp, errors.New("negative offset header")
		}
		sp.Offset = uint64(off)
	case nil:
	default:
		return nil, sp, fmt.Errorf("offset header of type %T", off)
	}
	return pub, sp, nil
}

func unmarshalPublication(body []byte) (*message.Publication, error) {
	var p protocol.Publication
	if err := p.UnmarshalCF(body); err != nil {
		return nil, fmt.Errorf("decode body: %w", err)
	}
	return &message.Publication{
		Offset: p.Offset,
		Data:   p.Data,
		Info:   fromProtoInfo(p.Info),
		Tags:   p.Tags,
		Time:   p.Time,
	}, nil
}

func encodeInfo(typ, channel string, info *message.ClientInfo) (amqp.Publishing, error) {
	body, err := toProtoInfo(info).MarshalCF()
	if err != nil {
		return amqp.Publishing{}, fmt.Errorf("amqp broker: encode client info: %w", err)
	}
	return amqp.Publishing{
		Type:         typ,
		ContentType:  contentTypeProtobuf,
		DeliveryMode: amqp.Transient,
		Headers:      amqp.Table{HeaderChannel: channel},
		Body:         body,
	}, nil
}

func decodeInfo(body []byte) (*message.ClientInfo, error) {
	var i protocol.ClientInfo
	if err := i.UnmarshalCF(body); err != nil {
		return nil, err
	}
	return fromProtoInfo(&i), nil
}
