package spark

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// ErrorInfo returns the google.rpc.ErrorInfo the server attached to err's status (the
// reason, the domain "spark.automagik.dev" and metadata such as the request id), or nil.
func ErrorInfo(err error) *errdetails.ErrorInfo {
	for _, d := range details(err) {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	return nil
}

// BadRequest returns the google.rpc.BadRequest attached to err's status, or nil.
func BadRequest(err error) *errdetails.BadRequest {
	for _, d := range details(err) {
		if bad, ok := d.(*errdetails.BadRequest); ok {
			return bad
		}
	}
	return nil
}

// FieldViolations maps each field named by the BadRequest of err's status to its
// description, e.g. {"id": "must be a UUID ..."}; it is empty when there is none.
func FieldViolations(err error) map[string]string {
	out := map[string]string{}
	for _, v := range BadRequest(err).GetFieldViolations() {
		out[v.GetField()] = v.GetDescription()
	}
	return out
}

func details(err error) []any {
	st, ok := status.FromError(err)
	if !ok || st == nil {
		return nil
	}
	return st.Details()
}
