//! Microsoft Graph import — not written yet: every call says so, so a
//! Microsoft source reports a clear error in its status instead of syncing.
//! (The Graph client lands with the rest of issue 5.)

use chrono::{DateTime, Utc};

use super::{
    Cursor, FetchMode, Fetched, ProviderError, RemoteCalendar, RenderContext, Rendered, TokenSource,
};

const NOT_YET: &str = "Microsoft Graph import is not available in this build yet";

pub struct GraphApi;

impl GraphApi {
    pub fn new(_base_url: impl Into<String>, _http: reqwest::Client) -> Self {
        GraphApi
    }

    pub async fn list_calendars(
        &self,
        _tokens: &dyn TokenSource,
    ) -> Result<Vec<RemoteCalendar>, ProviderError> {
        Err(ProviderError::Permanent(NOT_YET.into()))
    }

    pub async fn fetch(
        &self,
        _tokens: &dyn TokenSource,
        _calendar_id: &str,
        _cursor: &Cursor,
        _mode: FetchMode,
        _window: (DateTime<Utc>, DateTime<Utc>),
    ) -> Result<Fetched, ProviderError> {
        Err(ProviderError::Permanent(NOT_YET.into()))
    }
}

pub fn render(_items: &[serde_json::Value], _ctx: &RenderContext) -> Rendered {
    None
}
