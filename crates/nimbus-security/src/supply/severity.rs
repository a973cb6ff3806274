use std::fmt;
use std::str::FromStr;

/// How bad an advisory is, ordered `Unknown < Low < Medium < High < Critical`.
///
/// An advisory's severity is its `database_specific.severity` (GitHub's `LOW`, `MODERATE`,
/// `HIGH`, `CRITICAL`) when it has one, otherwise the CVSS bands of its highest-scoring CVSS
/// vector (v3.x, v4.0 or v2; 0.1-3.9 low, 4.0-6.9 medium, 7.0-8.9 high, 9.0-10.0 critical),
/// otherwise [`Severity::Unknown`]. Unknown ranks *below* Low: a threshold never blocks on a
/// severity nobody assessed, but the finding is still reported, so a caller that wants to refuse
/// unassessed advisories too checks for `Unknown` itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Neither a database severity nor a CVSS vector.
    Unknown,
    /// Low (CVSS below 4.0).
    Low,
    /// Medium, GitHub's "moderate" (CVSS 4.0-6.9).
    Medium,
    /// High (CVSS 7.0-8.9).
    High,
    /// Critical (CVSS 9.0 and above).
    Critical,
}

impl Severity {
    /// The severity of a CVSS vector (`CVSS:3.1/AV:N/...`, `CVSS:4.0/...` or a v2 vector), if it
    /// is one. A score of 0.0 ranks as low: the advisory still says the package is affected.
    pub(crate) fn from_cvss(vector: &str) -> Option<Self> {
        let cvss: cvss::Cvss = vector.parse().ok()?;
        Some(match cvss.severity() {
            cvss::Severity::None | cvss::Severity::Low => Self::Low,
            cvss::Severity::Medium => Self::Medium,
            cvss::Severity::High => Self::High,
            cvss::Severity::Critical => Self::Critical,
        })
    }
}

impl FromStr for Severity {
    type Err = String;

    /// `low`, `medium` (or `moderate`), `high` or `critical`, in any case.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Ok(Self::Low),
            "medium" | "moderate" => Ok(Self::Medium),
            "high" => Ok(Self::High),
            "critical" => Ok(Self::Critical),
            _ => Err(format!("unknown severity `{s}`: expected low, medium, high or critical")),
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unknown => "unknown",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        })
    }
}
