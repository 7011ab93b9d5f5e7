//! The chunk protocol between daemons, source side
//! (`src/format/FORMAT.md`): an image's chunk list, and its records as
//! stored. Only chunks of that image's file, for an account that may see
//! the image.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::St;
use crate::http::error::HttpResult;
use crate::http::extract::ImageReq;
use crate::imgapi::ApiError;
use crate::transfer::serve::Refused;
use crate::transfer::{ChunkSource, MAX_IDS_PER_FETCH};

/// Chunk ids whose records make one block of the answer (about 1 MiB at
/// the usual chunk sizes and compression; at most 16 maximal chunks).
const IDS_PER_BLOCK: usize = 16;

fn typed(body: impl IntoResponse, content_type: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// `groups=true`: the receiver takes transfer version 2 (group records,
/// chunk lists of version 2); without it the answers are version 1's.
fn takes_groups(r: &ImageReq) -> bool {
    r.query.get("groups") == Some("true")
}

pub(super) async fn list(State(st): St, r: ImageReq) -> HttpResult<Response> {
    let groups = takes_groups(&r);
    let list = st
        .run(move |api| {
            let source = api.chunk_source(&r.uuid, r.account())?;
            let source = if groups {
                source
            } else {
                source.without_groups()
            };
            Ok(source.chunk_list()?)
        })
        .await?;
    Ok(typed(
        crate::format::encode_chunk_list(&list),
        "application/x-imgstore-chunk-list",
    ))
}

pub(super) async fn fetch(State(st): St, r: ImageReq, body: Bytes) -> HttpResult<Response> {
    let ids = crate::format::decode_id_list(&body)
        .map_err(|e| ApiError::invalid_param("chunks", format!("bad chunk id list: {e}")))?;
    if ids.len() > MAX_IDS_PER_FETCH {
        return Err(ApiError::invalid_param(
            "chunks",
            format!("at most {MAX_IDS_PER_FETCH} chunks per request"),
        )
        .into());
    }
    let uuid = r.uuid;
    let groups = takes_groups(&r);
    let source = st
        .run(move |api| api.chunk_source(&uuid, r.account()))
        .await?;
    let source = if groups {
        source
    } else {
        source.without_groups()
    };
    match source.check(&ids) {
        Ok(()) => {}
        Err(Refused::NotInFile(bad)) => {
            return Err(ApiError::invalid_param(
                "chunks",
                format!("chunk {bad} is not part of the file of image {uuid}"),
            )
            .into());
        }
        Err(Refused::TooMany(n)) => {
            return Err(ApiError::invalid_param(
                "chunks",
                format!("{n} chunks asked for; at most {MAX_IDS_PER_FETCH} per request"),
            )
            .into());
        }
    }
    // Records go out a few ids at a time, each few read when the client
    // has taken the ones before.
    let mut stream = source.stream(ids);
    let mut more = true;
    let body = st.sender.body(move || {
        if !more {
            return Ok(None);
        }
        let mut block = Vec::with_capacity(crate::http::body::BLOCK);
        more = stream
            .next_ids(IDS_PER_BLOCK, &mut |rec| {
                block.extend_from_slice(rec);
                Ok(())
            })
            .map_err(std::io::Error::other)?;
        Ok(Some(block))
    });
    Ok(typed(body, "application/x-imgstore-records"))
}
